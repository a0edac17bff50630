// The writer's lock: acquire (SET NX EX, waiting while busy), the cleanup of a failed acquire's
// possible orphan, and release (compare-and-delete).
#include <algorithm>

#include "client/core.h"
#include "redis/resp.h"

namespace streamlock {

const char* toString(ReleaseOutcome outcome) noexcept {
  switch (outcome) {
    case ReleaseOutcome::Released: return "released";
    case ReleaseOutcome::NotOwner: return "not owner";
    case ReleaseOutcome::Failed: return "failed";
    case ReleaseOutcome::AlreadyReleased: return "already released";
  }
  return "?";
}

namespace detail {

class AcquireOperation final : public Operation {
 public:
  AcquireOperation(ClientCore& owner, std::string chat, std::string stream, Deadline until,
                   std::function<void(ClientCore::AcquireOutcome)> callback)
      : core(owner),
        chatId(std::move(chat)),
        streamId(std::move(stream)),
        key(owner.lockKey(chatId)),
        waitUntil(until),
        done(std::move(callback)) {}

  void abortForShutdown() override {
    if (finished) return;
    loop->cancel(timer);
    if (request != 0) {
      connection->abandon(request);
      // Its SET may already sit in the socket: the shutdown's pipeline deletes it if it ran.
      core.registerCleanup(key, streamId, sentAt);
    }
    finish(Error(ErrorCode::ShutDown, "the client is shut down"));
  }

  void finish(ClientCore::AcquireOutcome outcome) {
    finished = true;
    auto callback = std::move(done);
    core.finished(operationKey);  // destroys this operation: nothing of it is used after
    callback(std::move(outcome));
  }

  ClientCore& core;
  const std::string chatId;
  const std::string streamId;
  const std::string key;
  const Deadline waitUntil;
  std::function<void(ClientCore::AcquireOutcome)> done;
  std::uint64_t operationKey = 0;
  Loop* loop = nullptr;
  RedisConnection* connection = nullptr;
  RedisConnection::RequestId request = 0;  // the SET in flight, 0 between attempts
  Loop::TimerId timer = 0;
  Deadline sentAt{};
  bool finished = false;
};

void ClientCore::acquire(std::string chatId, std::string streamId, Milliseconds waitFor,
                         std::function<void(AcquireOutcome)> done) {
  if (chatId.empty() || streamId.empty()) {
    return done(Error(ErrorCode::InvalidArgument, "a stream lock needs a chat id and a stream id"));
  }
  if (!usable()) return done(Error(ErrorCode::ShutDown, "the client is shut down"));
  const Deadline waitUntil = deadlineIn(waitFor);
  auto operation = std::make_shared<AcquireOperation>(*this, std::move(chatId), std::move(streamId), waitUntil,
                                                      std::move(done));
  const bool posted = onLoop([this, operation] {
    if (closing_) return operation->done(Error(ErrorCode::ShutDown, "the client is shut down"));
    operation->operationKey = started(operation);
    operation->loop = &loop_;
    attemptAcquire(operation);
  });
  if (!posted) operation->done(Error(ErrorCode::ShutDown, "the client is shut down"));
}

void ClientCore::attemptAcquire(std::shared_ptr<AcquireOperation> op) {
  op->sentAt = Clock::now();
  if (!redisUrl_) {
    // Without Redis the pending map is the whole lock, as in single-process mode.
    if (pending_.tryRecord(op->chatId, op->streamId)) {
      {
        std::lock_guard<std::mutex> guard(heldMutex_);
        held_.emplace(op->chatId, op->streamId);
      }
      bump(counters_.locksAcquired);
      return op->finish(std::optional<Deadline>(op->sentAt));
    }
    if (op->sentAt >= op->waitUntil) return op->finish(std::optional<Deadline>());
    op->timer = loop_.at(std::min(saturatingAdd(op->sentAt, options_.lock.acquirePollInterval), op->waitUntil),
                         [this, op] { op->timer = 0; attemptAcquire(op); });
    return;
  }

  // A cleanup of this very (key, stream) not yet on the wire goes first, so that it cannot delete
  // the lock this attempt may take.
  const auto which = std::make_pair(op->key, op->streamId);
  if (cleanups_.count(which) && !cleanupsSent_.count(which)) sendCleanup(which);

  std::string resp;
  const std::string ttl = std::to_string(options_.lock.ttl.count());
  appendCommand(resp, {"SET", op->key, op->streamId, "NX", "EX", ttl});
  op->connection = &redis();
  op->request = op->connection->send(resp, 1, [this, op](RedisOutcome outcome) {
    op->request = 0;
    if (op->finished) return;
    loop_.cancel(op->timer);
    op->timer = 0;
    if (outcome.error) {
      countRedisFailure(*outcome.error);
      // The SET reached the socket before the connection failed: it may have run.
      if (outcome.written) registerCleanup(op->key, op->streamId, op->sentAt);
      return op->finish(*outcome.error);
    }
    const redisReply* reply = outcome.replies.front().get();
    if (isErrorReply(reply)) {
      try {
        throwReplyError(reply);
      } catch (const Error& e) {
        countRedisFailure(e);
        return op->finish(e);
      }
    }
    if (isStatusOk(reply)) {
      pending_.record(op->chatId, op->streamId);
      {
        std::lock_guard<std::mutex> guard(heldMutex_);
        held_.emplace(op->chatId, op->streamId);
      }
      bump(counters_.locksAcquired);
      return op->finish(std::optional<Deadline>(op->sentAt));
    }
    // Nil: another stream holds it. Wait for it to finish, up to waitFor.
    const Deadline now = Clock::now();
    if (now >= op->waitUntil) return op->finish(std::optional<Deadline>());
    op->timer = loop_.at(std::min(saturatingAdd(now, options_.lock.acquirePollInterval), op->waitUntil), [this, op] {
      op->timer = 0;
      if (!op->finished) attemptAcquire(op);
    });
  });
  op->timer = loop_.at(saturatingAdd(op->sentAt, options_.redis.commandTimeout), [this, op] {
    op->timer = 0;
    if (op->finished || op->request == 0) return;
    op->connection->abandon(op->request);
    op->request = 0;
    // The SET may still run (it sits in the socket of a hung server): delete our value right after
    // it, on the same connection, so that this failed acquire leaves no lock behind.
    registerCleanup(op->key, op->streamId, op->sentAt);
    const Error timeout(ErrorCode::Timeout, fmt::format("acquiring the lock of chat {} timed out after {} ms",
                                                        op->chatId, options_.redis.commandTimeout.count()));
    countRedisFailure(timeout);
    op->finish(timeout);
  });
}

// --- Orphan cleanup ------------------------------------------------------------------------------

void ClientCore::registerCleanup(const std::string& key, const std::string& streamId, Deadline sentAt) {
  const auto which = std::make_pair(key, streamId);
  // After the TTL the lock (if the SET ran) has expired by itself.
  cleanups_[which] = saturatingAdd(sentAt, options_.lock.ttl);
  cleanupsSent_.erase(which);
  sendCleanup(which);
}

void ClientCore::sendCleanup(const std::pair<std::string, std::string>& which) {
  if (!redisUrl_) return;
  cleanupsSent_.insert(which);
  std::string resp;
  // EVAL, not EVALSHA: it cannot meet NOSCRIPT, so it needs no second round.
  appendCommand(resp, {"EVAL", protocol::kReleaseScript, "1", which.first, which.second});
  redis().send(resp, 1, [this, which](RedisOutcome outcome) {
    const auto it = cleanups_.find(which);
    if (it == cleanups_.end()) return;
    cleanupsSent_.erase(which);
    if (!outcome.error && !isErrorReply(outcome.replies.front().get())) {
      if (isIntegerOne(outcome.replies.front().get())) {
        bump(counters_.orphansCleaned);
        log(LogLevel::Info, "deleted the lock of chat key {} that a failed acquire of stream {} left behind", which.first,
            which.second);
      }
      cleanups_.erase(it);
      return;
    }
    if (Clock::now() >= it->second) {
      cleanups_.erase(it);
      return;
    }
    // The connection failed (or Redis answered an error): try again soon, on a new connection.
    const Milliseconds retry = std::min(Milliseconds{250}, timing_.retryDelay);
    loop_.at(saturatingAdd(Clock::now(), retry), [this, which] {
      if (cleanups_.count(which) && !cleanupsSent_.count(which)) sendCleanup(which);
    });
  });
}

void ClientCore::queueUnsentCleanups() {
  const Deadline now = Clock::now();
  for (auto it = cleanups_.begin(); it != cleanups_.end();) {
    if (now >= it->second) {
      cleanupsSent_.erase(it->first);
      it = cleanups_.erase(it);
      continue;
    }
    if (!cleanupsSent_.count(it->first)) sendCleanup(it->first);
    ++it;
  }
}

// --- Release -------------------------------------------------------------------------------------

bool ClientCore::takeHeld(const std::string& chatId, const std::string& streamId) {
  std::vector<std::shared_ptr<HeartbeatEntry>> stopped;
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    if (held_.erase({chatId, streamId}) == 0) return false;
    const auto range = heartbeatsOf_.equal_range({chatId, streamId});
    for (auto it = range.first; it != range.second; ++it) {
      if (auto entry = it->second.lock()) stopped.push_back(std::move(entry));
    }
    heartbeatsOf_.erase(range.first, range.second);
  }
  for (const auto& entry : stopped) entry->stopped = true;
  return true;
}

void ClientCore::release(std::string chatId, std::string streamId, std::function<void(ReleaseOutcome)> done) {
  if (!takeHeld(chatId, streamId)) return done(ReleaseOutcome::AlreadyReleased);
  if (!redisUrl_) {
    return done(pending_.resolve(chatId, streamId) ? ReleaseOutcome::Released : ReleaseOutcome::NotOwner);
  }
  struct Release {
    std::string chatId;
    std::string streamId;
    std::function<void(ReleaseOutcome)> done;
    bool finished = false;
    Loop::TimerId timer = 0;
  };
  auto state = std::make_shared<Release>(Release{std::move(chatId), std::move(streamId), std::move(done)});
  const Deadline deadline = deadlineIn(options_.redis.commandTimeout);
  auto finish = [this, state](ReleaseOutcome outcome, const Error* error) {
    if (state->finished) return;
    state->finished = true;
    loop_.cancel(state->timer);
    if (error) {
      countRedisFailure(*error);
      log(LogLevel::Warning, "releasing the stream lock of chat {} failed (it expires by its TTL): {}", state->chatId,
          error->what());
    }
    pending_.resolve(state->chatId, state->streamId);
    if (outcome == ReleaseOutcome::Released) bump(counters_.locksReleased);
    auto callback = std::move(state->done);
    callback(outcome);
  };
  const bool posted = onLoop([this, state, deadline, finish] {
    if (closing_) {
      state->finished = true;
      pending_.resolve(state->chatId, state->streamId);
      auto callback = std::move(state->done);
      return callback(ReleaseOutcome::AlreadyReleased);
    }
    evalScripts(protocol::kReleaseScript, releaseSha_, {{lockKey(state->chatId), state->streamId}},
                [finish](RedisOutcome outcome) {
                  if (outcome.error) return finish(ReleaseOutcome::Failed, &*outcome.error);
                  const redisReply* reply = outcome.replies.front().get();
                  if (isErrorReply(reply)) {
                    const Error error(ErrorCode::ServerError, "Redis error: " + std::string(replyText(reply)));
                    return finish(ReleaseOutcome::Failed, &error);
                  }
                  finish(isIntegerOne(reply) ? ReleaseOutcome::Released : ReleaseOutcome::NotOwner, nullptr);
                });
    state->timer = loop_.at(deadline, [this, finish] {
      const Error timeout(ErrorCode::Timeout,
                          fmt::format("release timed out after {} ms", options_.redis.commandTimeout.count()));
      finish(ReleaseOutcome::Failed, &timeout);
    });
  });
  if (!posted) {
    // Shut down meanwhile: the shutdown released (or tried to release) every held lock.
    pending_.resolve(state->chatId, state->streamId);
    auto callback = std::move(state->done);
    callback(ReleaseOutcome::AlreadyReleased);
  }
}

void ClientCore::evalScripts(const char* script, const std::string& sha, std::vector<std::vector<std::string>> args,
                             std::function<void(RedisOutcome)> done) {
  std::string resp;
  for (const auto& arg : args) {
    std::vector<std::string_view> argv{"EVALSHA", sha, "1"};
    argv.insert(argv.end(), arg.begin(), arg.end());
    appendCommand(resp, argv);
  }
  auto shared = std::make_shared<std::vector<std::vector<std::string>>>(std::move(args));
  redis().send(resp, shared->size(), [this, script, shared, done = std::move(done)](RedisOutcome outcome) mutable {
    std::vector<std::size_t> missing;
    if (!outcome.error) {
      for (std::size_t i = 0; i < outcome.replies.size(); ++i) {
        if (isNoScript(outcome.replies[i].get())) missing.push_back(i);
      }
    }
    if (missing.empty()) return done(std::move(outcome));
    // The server lost its script cache (restart, SCRIPT FLUSH, failover): EVAL loads it again.
    std::string retry;
    for (std::size_t i : missing) {
      std::vector<std::string_view> argv{"EVAL", script, "1"};
      argv.insert(argv.end(), (*shared)[i].begin(), (*shared)[i].end());
      appendCommand(retry, argv);
    }
    auto first = std::make_shared<RedisOutcome>(std::move(outcome));
    redis().send(retry, missing.size(),
                 [first, missing = std::move(missing), done = std::move(done)](RedisOutcome second) mutable {
                   if (second.error) return done(std::move(second));
                   for (std::size_t j = 0; j < missing.size(); ++j) first->replies[missing[j]] = std::move(second.replies[j]);
                   done(std::move(*first));
                 });
  });
}

StreamLock ClientCore::makeLock(std::string chatId, std::string streamId, Deadline acquiredAt) {
  return StreamLock(shared_from_this(), std::move(chatId), std::move(streamId), acquiredAt);
}

}  // namespace detail

// --- StreamLock ------------------------------------------------------------------------------------

StreamLock::StreamLock(std::shared_ptr<detail::ClientCore> client, std::string chatId, std::string streamId,
                       std::chrono::steady_clock::time_point acquiredAt)
    : client_(std::move(client)), chatId_(std::move(chatId)), streamId_(std::move(streamId)), acquiredAt_(acquiredAt) {}

StreamLock::~StreamLock() {
  if (!client_) return;
  // Handed to the I/O thread; this thread never waits on the network.
  try {
    client_->release(chatId_, streamId_, [](ReleaseOutcome) {});
  } catch (...) {
    // Out of memory: the lock expires by its TTL.
  }
}

StreamLock& StreamLock::operator=(StreamLock&& other) noexcept {
  if (this != &other) {
    try {
      if (client_) client_->release(chatId_, streamId_, [](ReleaseOutcome) {});
    } catch (...) {
    }
    client_ = std::move(other.client_);
    chatId_ = std::move(other.chatId_);
    streamId_ = std::move(other.streamId_);
    acquiredAt_ = other.acquiredAt_;
  }
  return *this;
}

}  // namespace streamlock
