// libFuzzer target: arbitrary bytes as a Redis server's answer (RESP), parsed by hiredis'
// redisReader (as the library's connections do), each reply tree given to interpretMgetReply,
// throwIfError, isNoScript and isIntegerOne.
//
// Properties checked (a violation aborts, which libFuzzer reports as a crash):
// - the only exception thrown is streamlock::Error, with the documented code (Unsupported for a
//   Redis Cluster error, ServerError for another error reply or a malformed MGET answer,
//   ConnectionLost for no reply at all);
// - an accepted MGET answer is an array of exactly end - begin values; owners[begin + i] then holds
//   value i when it is a non-empty string, and every other slot of owners is left as it was.
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
using streamlock::detail::interpretMgetReply;
using streamlock::detail::isIntegerOne;
using streamlock::detail::isNoScript;
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

// interpretMgetReply for the keys [begin, end) of a batch of `count` keys. Every owner slot starts
// as a sentinel, so that "a nil or empty value leaves owners[begin + i] as it was" is checked too.
void checkMget(const redisReply* reply, std::size_t count, std::size_t begin, std::size_t end) {
  static const std::string sentinel = "\x01unchanged";
  std::vector<std::string> owners(count, sentinel);
  try {
    interpretMgetReply(reply, begin, end, owners);
  } catch (const Error& error) {
    const ErrorCode code = error.code();
    if (reply->type == REDIS_REPLY_ERROR) {
      check(code == (isClusterError(reply) ? ErrorCode::Unsupported : ErrorCode::ServerError),
            "interpretMgetReply threw the wrong code for an error reply");
    } else {
      check(code == ErrorCode::ServerError, "interpretMgetReply threw a code other than ServerError");
    }
    return;
  }
  check(reply->type == REDIS_REPLY_ARRAY, "interpretMgetReply accepted a reply that is not an array");
  check(begin <= end && end <= count && reply->elements == end - begin,
        "interpretMgetReply accepted the wrong number of values");
  check(owners.size() == count, "interpretMgetReply resized owners");
  for (std::size_t i = 0; i < count; ++i) {
    if (i < begin || i >= end) {
      check(owners[i] == sentinel, "interpretMgetReply wrote an owner outside [begin, end)");
      continue;
    }
    const redisReply* value = reply->element[i - begin];
    check(value->type == REDIS_REPLY_STRING || value->type == REDIS_REPLY_NIL,
          "interpretMgetReply accepted a value that is neither a string nor nil");
    if (value->type == REDIS_REPLY_STRING && value->len > 0) {
      check(owners[i] == text(value), "an owner is wrong");
    } else {
      check(owners[i] == sentinel, "a nil or empty value changed its owner slot");
    }
  }
}

void checkReply(const redisReply* reply, int depth) {
  checkThrowIfError(reply);
  checkPredicates(reply);
  // The shapes the library asks for: exactly the values of the batch, a batch that starts
  // further into the batch, and one bad shape, chosen by the reply so that each input stays cheap
  // (exceptions are slow): one value too many, an empty range, an inverted range, or a range that
  // matches the reply but ends past owners.
  const std::size_t n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 1;
  checkMget(reply, n, 0, n);
  checkMget(reply, n + 3, 2, n + 2);
  switch (n % 4) {
    case 0: checkMget(reply, n + 1, 0, n + 1); break;
    case 1: checkMget(reply, n, 0, 0); break;
    case 2: checkMget(reply, n + 1, 1, 0); break;
    default: checkMget(reply, n, 1, n + 1); break;
  }
  if (reply->type == REDIS_REPLY_ARRAY && depth < 2) {
    for (std::size_t i = 0; i < reply->elements; ++i) checkReply(reply->element[i], depth + 1);
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

struct FreeReader {
  void operator()(redisReader* reader) const noexcept { redisReaderFree(reader); }
};
struct FreeReply {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (declaresHugeArray(input)) return 0;

  // No reply at all (the connection died): ConnectionLost, and both predicates false.
  checkThrowIfError(nullptr);
  checkPredicates(nullptr);

  std::unique_ptr<redisReader, FreeReader> reader(redisReaderCreate());
  if (!reader) return 0;
  if (redisReaderFeed(reader.get(), input.data(), input.size()) != REDIS_OK) return 0;
  // Every complete reply in the bytes, as a pipeline of answers would arrive.
  for (;;) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK || raw == nullptr) break;
    const std::unique_ptr<redisReply, FreeReply> reply(static_cast<redisReply*>(raw));
    checkReply(reply.get(), 0);
  }
  return 0;
}
