#include "redis_pool.h"

#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#include "redis_reply.h"
#include "streamlock/error.h"

namespace streamlock::detail {

void ReplyDeleter::operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }

namespace {

struct ContextDeleter {
  void operator()(redisContext* context) const noexcept { redisFree(context); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

std::string describeEndpoint(const RedisUrl& url) { return url.host + ":" + std::to_string(url.port); }

// Starts a non-blocking connect to one address and waits for it to finish before the deadline.
ContextPtr connectOne(const std::string& address, int port, Deadline deadline, std::string& error) {
  ContextPtr context(redisConnectNonBlock(address.c_str(), port));
  if (!context) {
    error = "out of memory";
    return nullptr;
  }
  if (context->err) {
    error = context->errstr;
    return nullptr;
  }
  if (!waitForFd(context->fd, POLLOUT, deadline)) {
    error = "connect timed out";
    return nullptr;
  }
  int soError = 0;
  socklen_t length = sizeof soError;
  if (getsockopt(context->fd, SOL_SOCKET, SO_ERROR, &soError, &length) != 0) soError = errno;
  if (soError != 0) {
    error = std::strerror(soError);
    return nullptr;
  }
  redisEnableKeepAlive(context.get());
  return context;
}

std::vector<std::string> resolve(const RedisUrl& url) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = getaddrinfo(url.host.c_str(), nullptr, &hints, &found);
  if (rc != 0) {
    throw Error(ErrorCode::ConnectFailed, "cannot resolve Redis host " + url.host + ": " + gai_strerror(rc));
  }
  std::vector<std::string> addresses;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof text, nullptr, 0, NI_NUMERICHOST) == 0) {
      addresses.emplace_back(text);
    }
  }
  freeaddrinfo(found);
  return addresses;
}

}  // namespace

std::unique_ptr<RedisConnection> RedisConnection::open(const RedisUrl& url, Deadline deadline) {
  std::string error = "no address";
  ContextPtr context;
  for (const auto& address : resolve(url)) {
    context = connectOne(address, url.port, deadline, error);
    if (context || Clock::now() >= deadline) break;
  }
  if (!context) {
    ErrorCode code = Clock::now() >= deadline ? ErrorCode::Timeout : ErrorCode::ConnectFailed;
    throw Error(code, "cannot connect to Redis at " + describeEndpoint(url) + ": " + error);
  }
  std::unique_ptr<RedisConnection> connection(new RedisConnection(context.release()));

  std::vector<Argv> setup;
  if (!url.password.empty()) {
    if (url.user.empty()) {
      setup.push_back({"AUTH", url.password});
    } else {
      setup.push_back({"AUTH", url.user, url.password});
    }
  }
  std::string db = std::to_string(url.db);
  if (url.db != 0) setup.push_back({"SELECT", db});
  if (!setup.empty()) {
    auto replies = connection->pipeline(setup, deadline);
    for (const auto& reply : replies) {
      try {
        throwIfError(reply.get());
      } catch (const Error& e) {
        throw Error(ErrorCode::ConnectFailed, "Redis at " + describeEndpoint(url) + " refused the connection setup: " + e.what());
      }
    }
  }
  return connection;
}

RedisConnection::~RedisConnection() { redisFree(context_); }

void RedisConnection::fail(const std::string& what) {
  broken_ = true;
  if (what == "timeout") throw Error(ErrorCode::Timeout, "Redis command timed out");
  throw Error(ErrorCode::ConnectionLost, "Redis connection failed: " + what);
}

// Writes the buffered commands before the deadline.
void RedisConnection::send(Deadline deadline) {
  int done = 0;
  for (;;) {
    if (redisBufferWrite(context_, &done) == REDIS_ERR) fail(context_->errstr);
    if (done) return;
    if (!waitForFd(context_->fd, POLLOUT, deadline)) fail("timeout");
  }
}

// Writes the buffered commands and reads one reply for each, all before the deadline.
std::vector<Reply> RedisConnection::exchange(std::size_t count, Deadline deadline) {
  send(deadline);
  std::vector<Reply> replies;
  replies.reserve(count);
  for (std::size_t i = 0; i < count; ++i) replies.emplace_back(static_cast<redisReply*>(readRaw(deadline)));
  return replies;
}

void* RedisConnection::readRaw(Deadline deadline, const MgetReplies* mget) {
  for (;;) {
    void* reply = nullptr;
    if (redisGetReplyFromReader(context_, &reply) == REDIS_ERR) {
      if (mget != nullptr && mget->abandoned() != nullptr) {
        broken_ = true;  // the rest of the reply is still on the wire
        throw Error(ErrorCode::ServerError, mget->abandoned());
      }
      fail(context_->errstr);
    }
    if (reply != nullptr) return reply;
    if (!waitForFd(context_->fd, POLLIN, deadline)) fail("timeout");
    if (redisBufferRead(context_) == REDIS_ERR) fail(context_->errstr);
  }
}

std::vector<Reply> RedisConnection::pipeline(const std::vector<Argv>& commands, Deadline deadline) {
  if (broken_) throw Error(ErrorCode::ConnectionLost, "Redis connection is broken");
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const auto& command : commands) {
    argv.clear();
    lengths.clear();
    for (auto arg : command) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK) {
      fail("cannot format the command");
    }
  }
  return exchange(commands.size(), deadline);
}

void RedisConnection::pipelineMget(std::string_view resp, const std::vector<std::pair<std::size_t, std::size_t>>& ranges,
                                   MgetReplies& replies, Deadline deadline) {
  if (broken_) throw Error(ErrorCode::ConnectionLost, "Redis connection is broken");
  if (redisAppendFormattedCommand(context_, resp.data(), resp.size()) != REDIS_OK) fail("cannot buffer the commands");
  send(deadline);
  MgetReaderScope scope(context_->reader, replies);
  std::exception_ptr first;
  for (const auto& [begin, end] : ranges) {
    replies.expect(begin, end);
    void* reply = readRaw(deadline, &replies);
    try {
      replies.finish(reply);
    } catch (const Error&) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

Reply RedisConnection::command(const Argv& argv, Deadline deadline) {
  return std::move(pipeline({argv}, deadline).front());
}

bool RedisConnection::deadWhileIdle() const noexcept { return idleSocketIsDead(context_->fd); }

std::unique_ptr<RedisPool> makeRedisPool(const RedisUrl& url, const RedisOptions& options) {
  Milliseconds connectTimeout = options.connectTimeout;
  return std::make_unique<RedisPool>(options.poolSize, "Redis", [url, connectTimeout](Deadline deadline) {
    return RedisConnection::open(url, std::min(deadline, deadlineIn(connectTimeout)));
  });
}

}  // namespace streamlock::detail
