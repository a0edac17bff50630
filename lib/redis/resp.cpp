#include "redis/resp.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <system_error>

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

void ReplyDeleter::operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }

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
  std::size_t size = 0;
  for (const std::string* id : ids) size += 16 + prefix.size() + id->size();
  out.reserve(out.size() + size + (ids.size() / chunk + 1) * 32);
  std::size_t commands = 0;
  for (std::size_t begin = 0; begin < ids.size(); begin += chunk) {
    const std::size_t end = std::min(ids.size(), begin + chunk);
    appendHeader(out, '*', end - begin + 1);
    out.append("$4\r\nMGET\r\n");
    for (std::size_t i = begin; i < end; ++i) {
      appendHeader(out, '$', prefix.size() + ids[i]->size());
      out.append(prefix);
      out.append(*ids[i]);
      out.append("\r\n", 2);
    }
    ++commands;
  }
  return commands;
}

ReplyReader::ReplyReader() : reader_(redisReaderCreate()) {
  if (reader_ == nullptr) throw std::bad_alloc();
}

ReplyReader::~ReplyReader() { redisReaderFree(reader_); }

void ReplyReader::ArrayGuard::elementDone() {
  state_ = State::Type;
  while (!open_.empty()) {
    if (--open_.back() > 0) return;
    open_.pop_back();  // the array is complete: it is one element of its parent
  }
}

void ReplyReader::ArrayGuard::scan(const char* data, std::size_t size) {
  std::size_t at = 0;
  while (at < size && state_ != State::Lost) {
    switch (state_) {
      case State::Type:
        type_ = data[at++];
        header_.clear();
        // Lines (+status, -error, :integer) are skipped; $bulk and *array headers are read.
        state_ = (type_ == '$' || type_ == '*') ? State::Header : (type_ == '+' || type_ == '-' || type_ == ':')
                                                                      ? State::Line
                                                                      : State::Lost;  // hiredis reports it
        break;
      case State::Line: {
        const void* end = std::memchr(data + at, '\n', size - at);
        if (end == nullptr) return;
        at = static_cast<std::size_t>(static_cast<const char*>(end) - data) + 1;
        elementDone();
        break;
      }
      case State::Header: {
        const char c = data[at++];
        if (c != '\n') {
          if (header_.size() < 24) header_ += c;  // a longer number is malformed: hiredis says so
          break;
        }
        long long n = 0;
        const char* begin = header_.data();
        const char* stop = begin + header_.size() - (!header_.empty() && header_.back() == '\r' ? 1 : 0);
        if (std::from_chars(begin, stop, n).ec != std::errc{}) {
          state_ = State::Lost;
          break;
        }
        if (type_ == '*') {
          if (n > kMaxReplyElements) {
            throw Error(ErrorCode::ConnectionLost,
                        fmt::format("Redis protocol error: an array of {} elements (at most {} are read)", n,
                                    kMaxReplyElements));
          }
          if (n > 0) {
            open_.push_back(n);
            state_ = State::Type;
          } else {
            elementDone();
          }
        } else if (n < 0) {
          elementDone();  // a nil bulk string
        } else {
          bulkLeft_ = n + 2;  // the value and its CRLF
          state_ = State::Bulk;
        }
        break;
      }
      case State::Bulk: {
        const auto skip = static_cast<std::size_t>(std::min<long long>(bulkLeft_, static_cast<long long>(size - at)));
        at += skip;
        bulkLeft_ -= static_cast<long long>(skip);
        if (bulkLeft_ == 0) elementDone();
        break;
      }
      case State::Lost: return;
    }
  }
}

void ReplyReader::feed(const char* data, std::size_t size) {
  guard_.scan(data, size);
  if (redisReaderFeed(reader_, data, size) != REDIS_OK) {
    throw Error(ErrorCode::ConnectionLost, "Redis protocol error: " + std::string(reader_->errstr));
  }
}

Reply ReplyReader::next() {
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    throw Error(ErrorCode::ConnectionLost, "Redis protocol error: " + std::string(reader_->errstr));
  }
  return Reply(static_cast<redisReply*>(reply));
}

std::string_view replyText(const redisReply* reply) noexcept {
  if (reply == nullptr || reply->str == nullptr) return {};
  return {reply->str, reply->len};
}

bool isErrorReply(const redisReply* reply) noexcept { return reply != nullptr && reply->type == REDIS_REPLY_ERROR; }

bool isNoScript(const redisReply* reply) noexcept {
  return isErrorReply(reply) && startsWith(replyText(reply), "NOSCRIPT");
}

bool isInteger(const redisReply* reply) noexcept { return reply != nullptr && reply->type == REDIS_REPLY_INTEGER; }

bool isIntegerOne(const redisReply* reply) noexcept { return isInteger(reply) && reply->integer == 1; }

bool isStatusOk(const redisReply* reply) noexcept {
  return reply != nullptr && reply->type == REDIS_REPLY_STATUS && replyText(reply) == "OK";
}

bool isNil(const redisReply* reply) noexcept { return reply != nullptr && reply->type == REDIS_REPLY_NIL; }

void throwReplyError(const redisReply* reply) {
  const std::string_view message = replyText(reply);
  if (startsWith(message, "MOVED") || startsWith(message, "ASK ") || startsWith(message, "CROSSSLOT") ||
      startsWith(message, "CLUSTERDOWN")) {
    throw Error(ErrorCode::Unsupported, "Redis Cluster needs a redis-cluster:// URL (the server answered " +
                                            std::string(message.substr(0, message.find(' '))) + ")");
  }
  throw Error(ErrorCode::ServerError, "Redis error: " + std::string(message.substr(0, kErrorTextLimit)));
}

void readMgetReply(const redisReply* reply, std::size_t count, std::string* owners) {
  if (reply == nullptr) throw Error(ErrorCode::ConnectionLost, "Redis connection lost");
  if (reply->type == REDIS_REPLY_ERROR) throwReplyError(reply);
  if (reply->type != REDIS_REPLY_ARRAY) throw Error(ErrorCode::ServerError, "MGET answered with a non-array reply");
  if (reply->elements != count) throw Error(ErrorCode::ServerError, "MGET answered with the wrong number of values");
  for (std::size_t i = 0; i < count; ++i) {
    const redisReply* value = reply->element[i];
    if (value->type == REDIS_REPLY_NIL) continue;
    if (value->type != REDIS_REPLY_STRING) {
      throw Error(ErrorCode::ServerError, "MGET answered with a value that is not a string");
    }
    if (value->len > 0) owners[i].assign(value->str, value->len);
  }
}

}  // namespace streamlock::detail
