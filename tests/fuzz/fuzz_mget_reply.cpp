// libFuzzer target: arbitrary bytes as a Redis server's answer (RESP).
//
// MGET answers are read the way the library's connections read them: hiredis' redisReader with
// MgetReplies installed, so that values go straight into the owner slots. The same bytes parsed by
// a plain redisReader give hiredis' reply tree, the oracle: MgetReplies must accept exactly the
// trees that are an array of end - begin strings or nils, and then write exactly the tree's
// non-empty strings into owners[begin + i]. Every reply tree also goes through throwIfError,
// isNoScript and isIntegerOne.
//
// Properties checked (a violation aborts, which libFuzzer reports as a crash):
// - the only exception thrown is streamlock::Error, with the documented code (Unsupported for a
//   Redis Cluster error, ServerError for another error reply or a malformed MGET answer,
//   ConnectionLost for no reply at all);
// - an accepted MGET answer writes its non-empty string values into their owner slots, and every
//   other slot of owners is left as it was, also when the answer is refused;
// - a refused answer says why (MgetReplies::abandoned) when it stopped the reader.
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis_reply.h"
#include "streamlock/error.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::detail::isIntegerOne;
using streamlock::detail::isNoScript;
using streamlock::detail::MgetReaderScope;
using streamlock::detail::MgetReplies;
using streamlock::detail::throwIfError;

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_mget_reply: %s\n", what);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) violated(what);
}

std::string_view text(const redisReply* reply) { return {reply->str, reply->len}; }

bool isClusterError(const redisReply* reply) {
  const std::string_view message = text(reply);
  for (std::string_view prefix : {"MOVED", "ASK ", "CROSSSLOT", "CLUSTERDOWN"}) {
    if (message.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

// The code that throwIfError documents for this reply (or none: it must not throw).
bool expectedError(const redisReply* reply, ErrorCode& code) {
  if (reply == nullptr) {
    code = ErrorCode::ConnectionLost;
    return true;
  }
  if (reply->type != REDIS_REPLY_ERROR) return false;
  code = isClusterError(reply) ? ErrorCode::Unsupported : ErrorCode::ServerError;
  return true;
}

void checkThrowIfError(const redisReply* reply) {
  ErrorCode expected{};
  const bool shouldThrow = expectedError(reply, expected);
  try {
    throwIfError(reply);
  } catch (const Error& error) {
    check(shouldThrow, "throwIfError threw for a reply that is not an error");
    check(error.code() == expected, "throwIfError threw the wrong error code");
    return;
  }
  check(!shouldThrow, "throwIfError did not throw for an error reply");
}

void checkPredicates(const redisReply* reply) {
  const bool one = isIntegerOne(reply);
  check(one == (reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1),
        "isIntegerOne is wrong");
  const bool noScript = isNoScript(reply);
  check(noScript == (reply != nullptr && reply->type == REDIS_REPLY_ERROR && text(reply).substr(0, 8) == "NOSCRIPT"),
        "isNoScript is wrong");
}

struct FreeReader {
  void operator()(redisReader* reader) const noexcept { redisReaderFree(reader); }
};
struct FreeReply {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};

// The first reply of input read for the keys [begin, end) of a batch of `count` keys, checked
// against `oracle`, the same reply as hiredis' own tree. Every owner slot starts as a sentinel, so
// that "a nil or empty value leaves owners[begin + i] as it was" is checked too.
void checkMget(std::string_view input, const redisReply* oracle, std::size_t count, std::size_t begin,
               std::size_t end) {
  static const std::string sentinel = "\x01unchanged";
  std::vector<std::string> owners(count, sentinel);
  std::unique_ptr<redisReader, FreeReader> reader(redisReaderCreate());
  if (!reader) return;
  MgetReplies replies(owners);
  MgetReaderScope scope(reader.get(), replies);
  replies.expect(begin, end);
  check(redisReaderFeed(reader.get(), input.data(), input.size()) == REDIS_OK, "feeding the reader failed");
  void* reply = nullptr;
  const bool read = redisReaderGetReply(reader.get(), &reply) == REDIS_OK && reply != nullptr;

  // What the oracle says the answer is.
  const bool inRange = begin <= end && end <= count;
  const bool isArray = oracle->type == REDIS_REPLY_ARRAY;
  bool valuesOk = isArray;
  for (std::size_t i = 0; isArray && i < oracle->elements; ++i) {
    const int type = oracle->element[i]->type;
    valuesOk = valuesOk && (type == REDIS_REPLY_STRING || type == REDIS_REPLY_NIL);
  }
  const std::size_t wanted = inRange ? end - begin : 0;
  const bool acceptable = inRange && valuesOk && oracle->elements == wanted;

  bool accepted = false;
  if (!read) {
    // The reader stopped: only MgetReplies can have stopped it, on an array it must refuse.
    check(replies.abandoned() != nullptr, "the MGET reader failed without saying why");
    check(isArray && !acceptable, "the MGET reader stopped on a reply it should accept or read whole");
  } else {
    try {
      replies.finish(reply);
      accepted = true;
    } catch (const Error& error) {
      const ErrorCode code = error.code();
      if (oracle->type == REDIS_REPLY_ERROR) {
        check(code == (isClusterError(oracle) ? ErrorCode::Unsupported : ErrorCode::ServerError),
              "finish threw the wrong code for an error reply");
      } else {
        check(code == ErrorCode::ServerError, "finish threw a code other than ServerError");
        check(!isArray, "finish refused an array that the reader read whole");
      }
    }
    check(accepted == acceptable, "the MGET reader accepted a bad answer or refused a good one");
  }

  check(owners.size() == count, "the MGET reader resized owners");
  for (std::size_t i = 0; i < count; ++i) {
    const bool inside = accepted && i >= begin && i < end;
    const redisReply* value = inside ? oracle->element[i - begin] : nullptr;
    if (value != nullptr && value->type == REDIS_REPLY_STRING && value->len > 0) {
      check(owners[i] == text(value), "an owner is wrong");
    } else if (accepted || i < begin || i >= end) {
      check(owners[i] == sentinel, "an owner slot changed that should not have");
    }
  }
}

void checkReply(std::string_view input, const redisReply* reply) {
  checkThrowIfError(reply);
  checkPredicates(reply);
  for (std::size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements && i < 4; ++i) {
    checkThrowIfError(reply->element[i]);
    checkPredicates(reply->element[i]);
  }
  // The shapes the library asks for: exactly the values of the batch, a batch that starts further
  // into the owners, and one bad shape, chosen by the reply so that each input stays cheap
  // (exceptions are slow): one value too many, an empty range, an inverted range, or a range that
  // matches the reply but ends past owners.
  const std::size_t n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 1;
  checkMget(input, reply, n, 0, n);
  checkMget(input, reply, n + 3, 2, n + 2);
  switch (n % 4) {
    case 0: checkMget(input, reply, n + 1, 0, n + 1); break;
    case 1: checkMget(input, reply, n, 0, 0); break;
    case 2: checkMget(input, reply, n + 1, 1, 0); break;
    default: checkMget(input, reply, n, 1, n + 1); break;
  }
}

// hiredis 0.14 allocates a multi-bulk header's element array as soon as it reads the header, so
// "*1000000000\r\n" alone makes it allocate gigabytes (a property of hiredis, not of the code
// under test): inputs that declare big arrays are skipped.
bool declaresHugeArray(std::string_view input) {
  for (std::size_t at = input.find('*'); at != std::string_view::npos; at = input.find('*', at + 1)) {
    std::size_t i = at + 1;
    std::size_t digits = 0;
    unsigned long value = 0;
    while (i < input.size() && input[i] >= '0' && input[i] <= '9' && digits < 12) {
      value = value * 10 + static_cast<unsigned long>(input[i] - '0');
      ++i;
      ++digits;
    }
    if (digits >= 12 || value > 4096) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (declaresHugeArray(input)) return 0;

  // No reply at all (the connection died): ConnectionLost, and both predicates false.
  checkThrowIfError(nullptr);
  checkPredicates(nullptr);

  // The first complete reply, as hiredis builds it: the oracle.
  std::unique_ptr<redisReader, FreeReader> reader(redisReaderCreate());
  if (!reader) return 0;
  if (redisReaderFeed(reader.get(), input.data(), input.size()) != REDIS_OK) return 0;
  void* raw = nullptr;
  if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK || raw == nullptr) return 0;
  const std::unique_ptr<redisReply, FreeReply> reply(static_cast<redisReply*>(raw));
  checkReply(input, reply.get());
  return 0;
}
