#include "redis/resp.h"

#include <hiredis/read.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <new>
#include <system_error>
#include <type_traits>

#include <fmt/format.h>

#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

void appendHeader(std::string& out, char tag, std::size_t number) {
  char buffer[24];
  buffer[0] = tag;
  char* end = std::to_chars(buffer + 1, buffer + sizeof buffer - 2, number).ptr;
  *end++ = '\r';
  *end++ = '\n';
  out.append(buffer, static_cast<std::size_t>(end - buffer));
}

bool startsWith(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

// Error replies carry no secrets; they are cut short for the logs.
constexpr std::size_t kErrorTextLimit = 200;

}  // namespace

void appendCommand(std::string& out, const std::vector<std::string_view>& argv) {
  appendHeader(out, '*', argv.size());
  for (std::string_view arg : argv) {
    appendHeader(out, '$', arg.size());
    out.append(arg);
    out.append("\r\n", 2);
  }
}

void appendCommand(std::string& out, std::initializer_list<std::string_view> argv) {
  appendHeader(out, '*', argv.size());
  for (std::string_view arg : argv) {
    appendHeader(out, '$', arg.size());
    out.append(arg);
    out.append("\r\n", 2);
  }
}

std::size_t appendMgets(std::string& out, std::string_view prefix, const std::vector<const std::string*>& ids,
                        std::size_t chunk) {
  if (chunk == 0) chunk = 1;
  // Written through a pointer into room made once: a lookup of a thousand chats is 4,000 pieces.
  constexpr std::size_t kHeader = 1 + 20 + 2;  // '*' or '$', a number, CRLF
  constexpr std::string_view kMget = "$4\r\nMGET\r\n";
  std::size_t room = 0;
  for (const std::string* id : ids) room += kHeader + prefix.size() + id->size() + 2;
  room += (ids.size() / chunk + 1) * (kHeader + kMget.size());
  const std::size_t start = out.size();
  out.resize(start + room);
  char* at = out.data() + start;
  auto header = [&at](char tag, std::size_t number) {
    *at++ = tag;
    at = std::to_chars(at, at + 20, number).ptr;
    *at++ = '\r';
    *at++ = '\n';
  };
  auto copy = [&at](std::string_view bytes) {
    std::memcpy(at, bytes.data(), bytes.size());
    at += bytes.size();
  };
  std::size_t commands = 0;
  for (std::size_t begin = 0; begin < ids.size(); begin += chunk) {
    const std::size_t end = std::min(ids.size(), begin + chunk);
    header('*', end - begin + 1);
    copy(kMget);
    for (std::size_t i = begin; i < end; ++i) {
      header('$', prefix.size() + ids[i]->size());
      copy(prefix);
      copy(*ids[i]);
      copy("\r\n");
    }
    ++commands;
  }
  out.resize(static_cast<std::size_t>(at - out.data()));
  return commands;
}

// hiredis' object functions (its public redisReplyObjectFunctions), building ReplyValues: one
// allocation per value, a string's bytes or an array's element pointers right after it. A value
// that returns null is hiredis' out-of-memory error. Never throws: hiredis' frames are C.
struct ReplyFunctions {
  // Stands for the values of a sunk MGET answer and everything inside a bad one: never freed.
  static ReplyValue ignored;

  static ReplyValue* make(int type, std::size_t extra) noexcept {
    void* memory = std::malloc(sizeof(ReplyValue) + extra);
    if (memory == nullptr) return nullptr;
    auto* value = new (memory) ReplyValue();
    value->type = type;
    return value;
  }

  static void release(ReplyValue* value) noexcept {
    if (value == nullptr || value == &ignored) return;
    if (value->element != nullptr) {
      for (std::size_t i = 0; i < value->elements; ++i) release(value->element[i]);
    }
    value->~ReplyValue();
    std::free(value);
  }

  static ReplyValue* parentOf(const redisReadTask* task) noexcept {
    return task->parent == nullptr ? nullptr : static_cast<ReplyValue*>(task->parent->obj);
  }

  // A value inside a sunk MGET answer (or inside a bad element of one) gets no ReplyValue: true
  // when task is one, after doing what it needs (a string goes to its owner). type is the value's
  // (hiredis reads a nil array, "*-1", as a task of type ARRAY that creates a nil).
  static bool sunk(const redisReadTask* task, int type, const char* str, std::size_t len, void** out) noexcept {
    ReplyValue* parent = parentOf(task);
    if (parent == nullptr) return false;
    if (parent == &ignored) {
      *out = &ignored;
      return true;
    }
    if (parent->sunkOwners == nullptr) return false;
    *out = &ignored;
    if (type == REDIS_REPLY_NIL) return true;
    if (type != REDIS_REPLY_STRING) {
      parent->badValue = true;
      return true;
    }
    if (len == 0) return true;
    try {
      parent->sunkOwners[task->idx].assign(str, len);
    } catch (...) {
      *out = nullptr;  // out of memory
    }
    return true;
  }

  static void* attach(const redisReadTask* task, ReplyValue* value) noexcept {
    ReplyValue* parent = parentOf(task);
    if (value != nullptr && parent != nullptr) parent->element[task->idx] = value;
    return value;
  }

  static void* string(const redisReadTask* task, char* str, std::size_t len) noexcept {
    void* out = nullptr;
    if (sunk(task, task->type, str, len, &out)) return out;
    ReplyValue* value = make(task->type, len + 1);
    if (value == nullptr) return nullptr;
    char* bytes = reinterpret_cast<char*>(value + 1);
    std::memcpy(bytes, str, len);
    bytes[len] = '\0';
    value->str = bytes;
    value->len = len;
    return attach(task, value);
  }

  // The element count is an int in hiredis 0.14 and a size_t in later versions.
  template <typename Count>
  static void* array(const redisReadTask* task, Count elements) noexcept {
    void* out = nullptr;
    if (sunk(task, REDIS_REPLY_ARRAY, nullptr, 0, &out)) return out;
    if constexpr (std::is_signed_v<Count>) {
      if (elements < 0) return nullptr;
    }
    if (static_cast<unsigned long long>(elements) > static_cast<unsigned long long>(kMaxReplyElements)) return nullptr;
    const auto count = static_cast<std::size_t>(elements);
    auto* reader = static_cast<ReplyReader*>(task->privdata);
    if (task->parent == nullptr && reader->mgetOwners_ != nullptr && count == reader->mgetCount_) {
      ReplyValue* value = make(REDIS_REPLY_ARRAY, 0);
      if (value == nullptr) return nullptr;
      value->elements = count;
      value->sunkOwners = reader->mgetOwners_;
      return value;
    }
    ReplyValue* value = make(REDIS_REPLY_ARRAY, count * sizeof(ReplyValue*));
    if (value == nullptr) return nullptr;
    value->elements = count;
    value->element = reinterpret_cast<ReplyValue**>(value + 1);
    std::fill_n(value->element, count, nullptr);
    return attach(task, value);
  }

  template <typename Count>
  static auto arrayFunction(void* (*)(const redisReadTask*, Count)) {
    return &array<Count>;
  }

  static void* integer(const redisReadTask* task, long long number) noexcept {
    void* out = nullptr;
    if (sunk(task, REDIS_REPLY_INTEGER, nullptr, 0, &out)) return out;
    ReplyValue* value = make(REDIS_REPLY_INTEGER, 0);
    if (value == nullptr) return nullptr;
    value->integer = number;
    return attach(task, value);
  }

  static void* nil(const redisReadTask* task) noexcept {
    void* out = nullptr;
    if (sunk(task, REDIS_REPLY_NIL, nullptr, 0, &out)) return out;
    return attach(task, make(REDIS_REPLY_NIL, 0));
  }

  static void free(void* value) noexcept { release(static_cast<ReplyValue*>(value)); }

  static redisReplyObjectFunctions* functions() {
    static redisReplyObjectFunctions table = [] {
      redisReplyObjectFunctions fn{};  // later hiredis versions' RESP3 members stay null: never used
      fn.createString = &string;
      fn.createArray = arrayFunction(fn.createArray);
      fn.createInteger = &integer;
      fn.createNil = &nil;
      fn.freeObject = &free;
      return fn;
    }();
    return &table;
  }
};

ReplyValue ReplyFunctions::ignored;

void ReplyDeleter::operator()(ReplyValue* reply) const noexcept { ReplyFunctions::release(reply); }

ReplyReader::ReplyReader() : reader_(redisReaderCreateWithFunctions(ReplyFunctions::functions())) {
  if (reader_ == nullptr) throw std::bad_alloc();
  reader_->privdata = this;  // what redisReaderSetPrivdata sets; its int cast of a pointer does not compile in C++
}

ReplyReader::~ReplyReader() { redisReaderFree(reader_); }

void ReplyReader::ArrayGuard::elementDone() {
  state_ = State::Type;
  while (!open_.empty()) {
    if (--open_.back() > 0) return;
    open_.pop_back();  // the array is complete: it is one element of its parent
  }
}

void ReplyReader::ArrayGuard::fail(std::string why) {
  state_ = State::Lost;
  failure_ = std::move(why);
}

bool ReplyReader::ArrayGuard::header(std::string_view text) {
  // Exactly an integer and CR, as hiredis reads it up to its CRLF.
  if (text.size() < 2 || text.back() != '\r') {
    fail(fmt::format("a malformed '{}' header", type_));
    return false;
  }
  long long n = 0;
  const char* begin = text.data();
  const char* stop = begin + text.size() - 1;
  const auto [end, ec] = std::from_chars(begin, stop, n);
  if (ec != std::errc{} || end != stop) {
    fail(fmt::format("a malformed '{}' header", type_));
    return false;
  }
  if (type_ == '*') {
    if (n > kMaxReplyElements || n < -1) {
      fail(fmt::format("an array of {} elements (at most {} are read)", n, kMaxReplyElements));
      return false;
    }
    if (n > 0) {
      if (open_.size() >= kMaxReplyDepth) {
        fail(fmt::format("arrays nested more than {} deep", kMaxReplyDepth));
        return false;
      }
      open_.push_back(n);
      state_ = State::Type;
    } else {
      elementDone();  // empty, or a nil array
    }
  } else if (n < 0) {
    elementDone();  // a nil bulk string
  } else if (n > kMaxBulkLength) {
    fail(fmt::format("a bulk string of {} bytes (at most {} are read)", n, kMaxBulkLength));
    return false;
  } else {
    bulkLeft_ = n + 2;  // the value and its CRLF
    state_ = State::Bulk;
  }
  return true;
}

std::size_t ReplyReader::ArrayGuard::scan(const char* data, std::size_t size) {
  std::size_t at = 0;
  std::size_t element = 0;  // where the element being read began in data (0: in an earlier feed)
  while (at < size) {
    switch (state_) {
      case State::Lost: return element;
      case State::Type: {
        element = at;
        type_ = data[at++];
        if (type_ == '+' || type_ == '-' || type_ == ':') {
          lineCr_ = false;
          state_ = State::Line;
        } else if (type_ == '$' || type_ == '*') {
          header_.clear();
          state_ = State::Header;
        } else {
          fail(fmt::format("got byte {:#04x} as a reply type", static_cast<unsigned char>(type_)));
        }
        break;
      }
      case State::Line:
      case State::Header: {
        const void* found = std::memchr(data + at, '\n', size - at);
        const std::size_t stop = found == nullptr ? size : static_cast<std::size_t>(static_cast<const char*>(found) - data);
        if (state_ == State::Line) {
          // hiredis ends a line at its first CRLF: a lone LF before it would put the two out of step.
          const bool cr = stop > at ? data[stop - 1] == '\r' : lineCr_;
          if (found == nullptr) {
            lineCr_ = cr;
            at = size;
            break;
          }
          if (!cr) {
            fail("a line that ends without CRLF");
            break;
          }
          at = stop + 1;
          elementDone();
          break;
        }
        if (header_.size() + (stop - at) > 24) {
          fail(fmt::format("a malformed '{}' header", type_));
          break;
        }
        if (found == nullptr) {
          header_.append(data + at, stop - at);
          at = size;
          break;
        }
        if (header_.empty()) {
          header({data + at, stop - at});  // the common case: the whole header in this feed
        } else {
          header_.append(data + at, stop - at);
          header(header_);
        }
        at = stop + 1;
        break;
      }
      case State::Bulk: {
        const auto skip = static_cast<std::size_t>(std::min<long long>(bulkLeft_, static_cast<long long>(size - at)));
        at += skip;
        bulkLeft_ -= static_cast<long long>(skip);
        if (bulkLeft_ == 0) elementDone();
        break;
      }
    }
  }
  return state_ == State::Lost ? element : size;
}

void ReplyReader::feed(const char* data, std::size_t size) {
  const std::size_t accepted = guard_.scan(data, size);
  if (accepted > 0 && redisReaderFeed(reader_, data, accepted) != REDIS_OK) {
    throw Error(ErrorCode::ConnectionLost, "Redis protocol error: " + std::string(reader_->errstr));
  }
}

Reply ReplyReader::next() {
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    throw Error(ErrorCode::ConnectionLost, "Redis protocol error: " + std::string(reader_->errstr));
  }
  if (reply == nullptr && !guard_.failure().empty()) {
    throw Error(ErrorCode::ConnectionLost, "Redis protocol error: " + guard_.failure());
  }
  return Reply(static_cast<ReplyValue*>(reply));
}

std::string_view replyText(const ReplyValue* reply) noexcept {
  if (reply == nullptr || reply->str == nullptr) return {};
  return {reply->str, reply->len};
}

bool isErrorReply(const ReplyValue* reply) noexcept { return reply != nullptr && reply->type == REDIS_REPLY_ERROR; }

bool isNoScript(const ReplyValue* reply) noexcept {
  return isErrorReply(reply) && startsWith(replyText(reply), "NOSCRIPT");
}

bool isInteger(const ReplyValue* reply) noexcept { return reply != nullptr && reply->type == REDIS_REPLY_INTEGER; }

bool isIntegerOne(const ReplyValue* reply) noexcept { return isInteger(reply) && reply->integer == 1; }

bool isStatusOk(const ReplyValue* reply) noexcept {
  return reply != nullptr && reply->type == REDIS_REPLY_STATUS && replyText(reply) == "OK";
}

bool isNil(const ReplyValue* reply) noexcept { return reply != nullptr && reply->type == REDIS_REPLY_NIL; }

void throwReplyError(const ReplyValue* reply) {
  const std::string_view message = replyText(reply);
  if (startsWith(message, "MOVED") || startsWith(message, "ASK ") || startsWith(message, "CROSSSLOT") ||
      startsWith(message, "CLUSTERDOWN")) {
    throw Error(ErrorCode::Unsupported, "Redis Cluster needs a redis-cluster:// URL (the server answered " +
                                            std::string(message.substr(0, message.find(' '))) + ")");
  }
  throw Error(ErrorCode::ServerError, "Redis error: " + std::string(message.substr(0, kErrorTextLimit)));
}

void readMgetReply(const ReplyValue* reply, std::size_t count, std::string* owners) {
  if (reply == nullptr) throw Error(ErrorCode::ConnectionLost, "Redis connection lost");
  if (reply->type == REDIS_REPLY_ERROR) throwReplyError(reply);
  if (reply->type != REDIS_REPLY_ARRAY) throw Error(ErrorCode::ServerError, "MGET answered with a non-array reply");
  if (reply->elements != count) throw Error(ErrorCode::ServerError, "MGET answered with the wrong number of values");
  if (reply->sunkOwners != nullptr) {
    if (reply->badValue) throw Error(ErrorCode::ServerError, "MGET answered with a value that is not a string");
    if (reply->sunkOwners != owners) {
      for (std::size_t i = 0; i < count; ++i) {
        if (!reply->sunkOwners[i].empty()) owners[i] = reply->sunkOwners[i];
      }
    }
    return;
  }
  for (std::size_t i = 0; i < count; ++i) {
    const ReplyValue* value = reply->element[i];
    if (value->type == REDIS_REPLY_NIL) continue;
    if (value->type != REDIS_REPLY_STRING) {
      throw Error(ErrorCode::ServerError, "MGET answered with a value that is not a string");
    }
    if (value->len > 0) owners[i].assign(value->str, value->len);
  }
}

}  // namespace streamlock::detail
