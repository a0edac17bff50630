// libFuzzer target: arbitrary bytes as a Redis server's answer (RESP), read the way the library's
// connection reads them (ReplyReader over hiredis' public reader, fed in two chunks split at a
// position the input chooses), each reply then read as an MGET answer (readMgetReply) and checked
// by the reply predicates.
//
// Properties checked (a violation aborts, which libFuzzer reports as a crash):
// - the only exception thrown is streamlock::Error: ConnectionLost for a protocol error,
//   Unsupported for a Redis Cluster error, ServerError for another error reply or a malformed
//   MGET answer;
// - an accepted MGET answer is an array of exactly `count` strings or nils, and owners[i] is the
//   i-th string when non-empty, else empty; a refused one may leave owners partly written, which
//   the library never reads (the lookup is then unknown);
// - the same bytes read with the MGET sink armed for every reply (as the connection reads a
//   lookup's answers) give the same replies, the same refusal, and the same owners or error code;
// - differential: when the reader accepts every byte, hiredis' own reader (its default reply
//   objects) reads the same replies, value for value.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "redis/resp.h"
#include "streamlock/error.h"

using streamlock::Error;
using streamlock::ErrorCode;
namespace detail = streamlock::detail;

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "property violated: %s\n", what);
  std::abort();
}

// What reading one reply as an MGET answer of count keys gave: the owners, or the error code.
struct MgetOutcome {
  std::optional<ErrorCode> error;
  std::vector<std::string> owners;
  bool operator==(const MgetOutcome& other) const { return error == other.error && owners == other.owners; }
};

MgetOutcome readMget(const detail::ReplyValue* reply, std::vector<std::string>& owners) {
  MgetOutcome out;
  try {
    detail::readMgetReply(reply, owners.size(), owners.data());
  } catch (const Error& e) {
    if (e.code() != ErrorCode::Unsupported && e.code() != ErrorCode::ServerError) {
      violated("readMgetReply threw an unexpected code");
    }
    out.error = e.code();
    return out;
  }
  out.owners = owners;
  return out;
}

void checkAccepted(const detail::ReplyValue* reply, const MgetOutcome& outcome, std::size_t count) {
  if (outcome.error) return;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != count) violated("accepted a reply of the wrong shape");
  if (reply->element == nullptr) return;  // sunk: compared with the unsunk reading instead
  for (std::size_t i = 0; i < count; ++i) {
    const detail::ReplyValue* value = reply->element[i];
    const std::string expected =
        value->type == REDIS_REPLY_STRING ? std::string(value->str, value->len) : std::string();
    if (value->type != REDIS_REPLY_STRING && value->type != REDIS_REPLY_NIL) violated("accepted a non-string value");
    if (outcome.owners[i] != expected) violated("an owner differs from its value");
  }
}

void checkPredicates(const detail::ReplyValue* reply) {
  (void)detail::isNoScript(reply);
  (void)detail::isIntegerOne(reply);
  (void)detail::isStatusOk(reply);
  if (detail::isErrorReply(reply)) {
    try {
      detail::throwReplyError(reply);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::Unsupported && e.code() != ErrorCode::ServerError) violated("error reply code");
    }
  }
}

// Every reply in the bytes, fed in two chunks; with sinks, each reply's sink is armed for count
// values (a fresh owners vector per reply, kept alive in sinks).
struct Reading {
  std::vector<detail::Reply> replies;
  std::optional<ErrorCode> error;
};

Reading readAll(const char* bytes, std::size_t length, std::size_t split,
                std::vector<std::vector<std::string>>* sinks, std::size_t count) {
  Reading out;
  detail::ReplyReader reader;
  auto drain = [&] {
    for (;;) {
      if (sinks != nullptr) {
        if (sinks->size() <= out.replies.size()) sinks->emplace_back(count);
        reader.expectMget((*sinks)[out.replies.size()].data(), count);
      }
      detail::Reply reply = reader.next();
      if (!reply) return;
      out.replies.push_back(std::move(reply));
    }
  };
  try {
    reader.feed(bytes, std::min(split, length));
    drain();
    if (split < length) {
      reader.feed(bytes + split, length - split);
      drain();
    }
  } catch (const Error& e) {
    if (e.code() != ErrorCode::ConnectionLost) violated("the reader threw an unexpected code");
    out.error = e.code();
  }
  return out;
}

bool sameValue(const detail::ReplyValue* mine, const redisReply* theirs) {
  if (mine->type != theirs->type) return false;
  switch (mine->type) {
    case REDIS_REPLY_INTEGER: return mine->integer == theirs->integer;
    case REDIS_REPLY_NIL: return true;
    case REDIS_REPLY_ARRAY:
      if (mine->elements != theirs->elements) return false;
      for (std::size_t i = 0; i < mine->elements; ++i) {
        if (!sameValue(mine->element[i], theirs->element[i])) return false;
      }
      return true;
    default:
      return mine->len == theirs->len && std::equal(mine->str, mine->str + mine->len, theirs->str) &&
             mine->str[mine->len] == '\0';
  }
}

// hiredis' own reader on the same bytes, in one feed: each reply must be the same as ours.
void compareWithHiredis(const char* bytes, std::size_t length, const std::vector<detail::Reply>& replies) {
  redisReader* reader = redisReaderCreate();
  if (reader == nullptr) return;
  if (length > 0 && redisReaderFeed(reader, bytes, length) != REDIS_OK) violated("hiredis refused what we fed");
  for (const auto& mine : replies) {
    void* theirs = nullptr;
    if (redisReaderGetReply(reader, &theirs) != REDIS_OK || theirs == nullptr) {
      violated("hiredis' reader found fewer replies");
    }
    const bool same = sameValue(mine.get(), static_cast<redisReply*>(theirs));
    freeReplyObject(theirs);
    if (!same) violated("a reply differs from hiredis' own reading");
  }
  redisReaderFree(reader);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t count = data[0] % 8;  // the MGET's number of keys
  const std::size_t split = data[1] % (size - 1);
  const char* bytes = reinterpret_cast<const char*>(data + 2);
  const std::size_t length = size - 2;

  const Reading plain = readAll(bytes, length, split, nullptr, count);
  std::vector<std::vector<std::string>> sinks;
  const Reading sunk = readAll(bytes, length, split, &sinks, count);
  if (plain.replies.size() != sunk.replies.size() || plain.error != sunk.error) {
    violated("the armed reader read other replies");
  }
  for (std::size_t r = 0; r < plain.replies.size(); ++r) {
    const detail::ReplyValue* reply = plain.replies[r].get();
    std::vector<std::string> owners(count);
    const MgetOutcome outcome = readMget(reply, owners);
    checkAccepted(reply, outcome, count);
    const MgetOutcome sunkOutcome = readMget(sunk.replies[r].get(), sinks[r]);
    checkAccepted(sunk.replies[r].get(), sunkOutcome, count);
    if (!(outcome == sunkOutcome)) violated("the sink read an MGET answer differently");
    checkPredicates(reply);
  }
  if (!plain.error) compareWithHiredis(bytes, length, plain.replies);
  return 0;
}
