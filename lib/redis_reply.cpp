#include "redis_reply.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

bool startsWith(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

std::string_view text(const redisReply* reply) { return {reply->str, reply->len}; }

// Error replies carry no secrets; they are cut short for the logs.
constexpr std::size_t kErrorTextLimit = 200;

[[noreturn]] void throwErrorReply(std::string_view message) {
  if (startsWith(message, "MOVED") || startsWith(message, "ASK ") || startsWith(message, "CROSSSLOT") ||
      startsWith(message, "CLUSTERDOWN")) {
    throw Error(ErrorCode::Unsupported,
                "Redis Cluster is not supported (the server answered " +
                    std::string(message.substr(0, message.find(' '))) + ")");
  }
  throw Error(ErrorCode::ServerError, "Redis error: " + std::string(message.substr(0, kErrorTextLimit)));
}

}  // namespace

// The object functions hiredis' reader calls while it parses. Every "object" is the MgetReplies
// itself (never null, which would tell the reader "out of memory"), except when a value is refused:
// then null stops the reader, and abandoned_ says why. Nothing may throw through hiredis' C frames,
// so a failed allocation stops the reader too.
struct MgetCallbacks {
  using Shape = MgetReplies::Shape;

  static MgetReplies& of(const redisReadTask* task) noexcept { return *static_cast<MgetReplies*>(task->privdata); }
  static bool isWhole(const redisReadTask* task) noexcept { return task->parent == nullptr; }
  // Position of a value of the reply's array, or count_ when the task is not one.
  static std::size_t position(const MgetReplies& r, const redisReadTask* task) noexcept {
    if (r.shape_ != Shape::Array || task->parent == nullptr || task->parent->parent != nullptr || task->idx < 0) {
      return r.count_;
    }
    return static_cast<std::size_t>(task->idx);
  }
  static void* stop(MgetReplies& r, const char* why) noexcept {
    if (r.abandoned_ == nullptr) r.abandoned_ = why;
    return nullptr;
  }
  static void* notString(MgetReplies& r) noexcept { return stop(r, "MGET answered with a value that is not a string"); }

  static void* createString(const redisReadTask* task, char* str, size_t len) noexcept {
    MgetReplies& r = of(task);
    try {
      if (isWhole(task)) {
        if (task->type == REDIS_REPLY_ERROR) {
          r.shape_ = Shape::Error;
          r.error_.assign(str, std::min<std::size_t>(len, kErrorTextLimit));
        } else {
          r.shape_ = Shape::NotArray;
        }
        return &r;
      }
      std::size_t at = position(r, task);
      if (task->type != REDIS_REPLY_STRING || at >= r.count_) return notString(r);
      if (len > 0) r.owners_[r.begin_ + at].assign(str, len);  // an empty value counts as no owner
      return &r;
    } catch (...) {
      return stop(r, "out of memory reading an MGET answer");
    }
  }

  static void* createArray(const redisReadTask* task, int elements) noexcept {
    MgetReplies& r = of(task);
    if (!isWhole(task)) return notString(r);
    if (!r.valid_ || elements < 0 || static_cast<std::size_t>(elements) != r.count_) {
      return stop(r, "MGET answered with the wrong number of values");
    }
    r.shape_ = Shape::Array;
    return &r;
  }

  static void* createInteger(const redisReadTask* task, long long) noexcept {
    MgetReplies& r = of(task);
    if (!isWhole(task)) return notString(r);
    r.shape_ = Shape::NotArray;
    return &r;
  }

  static void* createNil(const redisReadTask* task) noexcept {
    MgetReplies& r = of(task);
    if (isWhole(task)) {
      r.shape_ = Shape::NotArray;
    } else if (position(r, task) >= r.count_) {
      return notString(r);
    }
    return &r;
  }

  static void freeObject(void*) noexcept {}  // nothing was allocated

  static redisReplyObjectFunctions functions;
};

redisReplyObjectFunctions MgetCallbacks::functions = {
    MgetCallbacks::createString, MgetCallbacks::createArray, MgetCallbacks::createInteger,
    MgetCallbacks::createNil,    MgetCallbacks::freeObject,
};

void MgetReplies::expect(std::size_t begin, std::size_t end) noexcept {
  // A range outside owners accepts no array at all (and so writes nothing).
  valid_ = begin <= end && end <= owners_.size();
  begin_ = valid_ ? begin : 0;
  count_ = valid_ ? end - begin : 0;
  shape_ = Shape::Pending;
  error_.clear();
}

void MgetReplies::finish(const void* reply) const {
  if (reply != this) throw Error(ErrorCode::ConnectionLost, "Redis connection lost");
  switch (shape_) {
    case Shape::Array: return;
    case Shape::Error: throwErrorReply(error_);
    case Shape::Pending:
    case Shape::NotArray: break;
  }
  throw Error(ErrorCode::ServerError, "MGET answered with a non-array reply");
}

MgetReaderScope::MgetReaderScope(redisReader* reader, MgetReplies& replies) noexcept
    : reader_(reader), replies_(replies), savedFunctions_(reader->fn), savedPrivdata_(reader->privdata) {
  reader_->fn = &MgetCallbacks::functions;
  reader_->privdata = &replies_;
}

MgetReaderScope::~MgetReaderScope() {
  if (reader_->reply == &replies_) reader_->reply = nullptr;
  reader_->fn = savedFunctions_;
  reader_->privdata = savedPrivdata_;
}

void throwIfError(const redisReply* reply) {
  if (reply == nullptr) throw Error(ErrorCode::ConnectionLost, "Redis connection lost");
  if (reply->type == REDIS_REPLY_ERROR) throwErrorReply(text(reply));
}

bool isIntegerOne(const redisReply* reply) noexcept {
  return reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1;
}

bool isNoScript(const redisReply* reply) noexcept {
  return reply != nullptr && reply->type == REDIS_REPLY_ERROR && startsWith(text(reply), "NOSCRIPT");
}

}  // namespace streamlock::detail
