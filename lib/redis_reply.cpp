#include "redis_reply.h"

#include <hiredis/hiredis.h>

#include <string>
#include <string_view>

#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

bool startsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

std::string_view text(const redisReply* reply) { return {reply->str, reply->len}; }

}  // namespace

void throwIfError(const redisReply* reply) {
  if (reply == nullptr) throw Error(ErrorCode::ConnectionLost, "Redis connection lost");
  if (reply->type != REDIS_REPLY_ERROR) return;
  std::string_view message = text(reply);
  if (startsWith(message, "MOVED") || startsWith(message, "ASK ") || startsWith(message, "CROSSSLOT") ||
      startsWith(message, "CLUSTERDOWN")) {
    throw Error(ErrorCode::Unsupported,
                "Redis Cluster is not supported (the server answered " +
                    std::string(message.substr(0, message.find(' '))) + ")");
  }
  // Error replies carry no secrets; keep them short for the logs.
  throw Error(ErrorCode::ServerError, "Redis error: " + std::string(message.substr(0, 200)));
}

void interpretMgetReply(const redisReply* reply, std::size_t begin, std::size_t end, std::vector<std::string>& owners) {
  throwIfError(reply);
  if (reply->type != REDIS_REPLY_ARRAY) throw Error(ErrorCode::ServerError, "MGET answered with a non-array reply");
  if (end < begin || end > owners.size() || reply->elements != end - begin) {
    throw Error(ErrorCode::ServerError, "MGET answered with the wrong number of values");
  }
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* value = reply->element[i];
    if (value == nullptr) throw Error(ErrorCode::ServerError, "MGET answered with a missing element");
    switch (value->type) {
      case REDIS_REPLY_NIL:
        break;
      case REDIS_REPLY_STRING:
        // An empty lock value counts as no owner.
        if (value->len > 0) owners[begin + i].assign(value->str, value->len);
        break;
      default:
        throw Error(ErrorCode::ServerError, "MGET answered with a value that is not a string");
    }
  }
}

bool isIntegerOne(const redisReply* reply) noexcept {
  return reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
}

bool isNoScript(const redisReply* reply) noexcept {
  return reply != nullptr && reply->type == REDIS_REPLY_ERROR && startsWith(text(reply), "NOSCRIPT");
}

}  // namespace streamlock::detail
