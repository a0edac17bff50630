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
//   the library never reads (the lookup is then unknown).
#include <hiredis/hiredis.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
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

void checkMget(const redisReply* reply, std::size_t count) {
  std::vector<std::string> owners(count);
  try {
    detail::readMgetReply(reply, count, owners.data());
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Unsupported || e.code() == ErrorCode::ServerError) return;
    violated("readMgetReply threw an unexpected code");
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != count) violated("accepted a reply of the wrong shape");
  for (std::size_t i = 0; i < count; ++i) {
    const redisReply* value = reply->element[i];
    const std::string expected =
        value->type == REDIS_REPLY_STRING ? std::string(value->str, value->len) : std::string();
    if (value->type != REDIS_REPLY_STRING && value->type != REDIS_REPLY_NIL) violated("accepted a non-string value");
    if (owners[i] != expected) violated("an owner differs from its value");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t count = data[0] % 8;  // the MGET's number of keys
  const std::size_t split = data[1] % (size - 1);
  const char* bytes = reinterpret_cast<const char*>(data + 2);
  const std::size_t length = size - 2;
  detail::ReplyReader reader;
  try {
    reader.feed(bytes, std::min(split, length));
    for (int round = 0; round < 2; ++round) {
      for (;;) {
        detail::Reply reply = reader.next();
        if (!reply) break;
        checkMget(reply.get(), count);
        (void)detail::isNoScript(reply.get());
        (void)detail::isIntegerOne(reply.get());
        (void)detail::isStatusOk(reply.get());
        if (detail::isErrorReply(reply.get())) {
          try {
            detail::throwReplyError(reply.get());
          } catch (const Error& e) {
            if (e.code() != ErrorCode::Unsupported && e.code() != ErrorCode::ServerError) violated("error reply code");
          }
        }
      }
      if (round == 0 && split < length) reader.feed(bytes + split, length - split);
      if (round == 0 && split >= length) break;
    }
  } catch (const Error& e) {
    if (e.code() != ErrorCode::ConnectionLost) violated("the reader threw an unexpected code");
  }
  return 0;
}
