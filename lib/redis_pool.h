#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io.h"
#include "pool.h"
#include "redis_reply.h"
#include "redis_url.h"
#include "streamlock/options.h"

struct redisContext;
struct redisReply;

namespace streamlock::detail {

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept;
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// One command in argv form; the views must outlive the call.
using Argv = std::vector<std::string_view>;

// A hiredis context driven non-blocking with poll(), so that every call honours a deadline
// (hiredis 0.14 only has per-syscall timeouts). Any I/O error or timeout marks it broken.
class RedisConnection {
 public:
  // Connects to each address of the host in turn, then AUTH and SELECT, all before the deadline.
  // Throws Error(ConnectFailed, Timeout, ServerError).
  static std::unique_ptr<RedisConnection> open(const RedisUrl& url, Deadline deadline);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends the commands as one pipeline and returns one reply per command, in order.
  // Error replies are returned, not thrown. Throws Error(Timeout, ConnectionLost).
  std::vector<Reply> pipeline(const std::vector<Argv>& commands, Deadline deadline);
  Reply command(const Argv& argv, Deadline deadline);
  // Sends MGETs already encoded as RESP in one buffer, as one pipeline, and reads their replies into
  // `replies`: reply c answers for the keys [ranges[c].first, ranges[c].second). Reads every reply
  // before it throws what the first bad one threw (see MgetReplies), so that the connection stays
  // in step. Throws Error(Timeout, ConnectionLost, ServerError, Unsupported).
  void pipelineMget(std::string_view resp, const std::vector<std::pair<std::size_t, std::size_t>>& ranges,
                    MgetReplies& replies, Deadline deadline);

  bool broken() const noexcept { return broken_; }
  bool deadWhileIdle() const noexcept;

 private:
  explicit RedisConnection(redisContext* context) : context_(context) {}
  [[noreturn]] void fail(const std::string& what);
  void send(Deadline deadline);
  std::vector<Reply> exchange(std::size_t count, Deadline deadline);
  // The next reply as the reader's functions built it. When the reader fails and mget says why
  // (its functions stopped it), throws Error(ServerError) with that reason.
  void* readRaw(Deadline deadline, const MgetReplies* mget = nullptr);

  redisContext* context_;
  bool broken_ = false;
};

using RedisPool = Pool<RedisConnection>;

// A pool of connections to url; each connect is bounded by options.connectTimeout and by the
// deadline of the acquire that opens it.
std::unique_ptr<RedisPool> makeRedisPool(const RedisUrl& url, const RedisOptions& options);

}  // namespace streamlock::detail
