// The writer's lock: acquire (SET NX EX, waiting while busy), the cleanup of a failed acquire's
// possible orphan, and release (compare-and-delete).
#include <hiredis/hiredis.h>

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
    // Its SET may already sit in a socket: the shutdown's pipeline deletes it if it ran.
    if (inFlight) core.registerCleanup(key, streamId, sentAt);
    finish(Error(ErrorCode::ShutDown, "the client is shut down"));
  }

  void finish(ClientCore::AcquireOutcome outcome) {
    if (finished) return;  // e.g. its SET failed while the timeout that dropped the connection ran
    finished = true;
    loop->cancel(timer);
    auto callback = std::move(done);
    core.finished(operationKey);  // may destroy this operation: nothing of it is used after
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
  Loop::TimerId timer = 0;
  Deadline sentAt{};
  std::uint64_t attempt = 0;  // outcomes of an earlier attempt are ignored
  bool inFlight = false;      // a SET (or its WAIT) is on the wire
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
    operation->loop = &loop_;
    if (closing_) return operation->finish(Error(ErrorCode::ShutDown, "the client is shut down"));
    operation->operationKey = started(operation);
    attemptAcquire(operation);
  });
  if (!posted) {
    auto callback = std::move(operation->done);
    callback(Error(ErrorCode::ShutDown, "the client is shut down"));
  }
}

void ClientCore::attemptAcquire(std::shared_ptr<AcquireOperation> op) {
  op->sentAt = Clock::now();
  const std::uint64_t attempt = ++op->attempt;
  auto acquired = [this, op] {
    if (redisUrl_) pending_.record(op->chatId, op->streamId);
    {
      std::lock_guard<std::mutex> guard(heldMutex_);
      held_.emplace(op->chatId, op->streamId);
    }
    bump(counters_.locksAcquired);
    op->finish(std::optional<Deadline>(op->sentAt));
  };
  // Busy: try again after the poll interval, until waitFor has passed.
  auto busy = [this, op] {
    const Deadline now = Clock::now();
    if (now >= op->waitUntil) return op->finish(std::optional<Deadline>());
    op->timer = loop_.at(std::min(saturatingAdd(now, options_.lock.acquirePollInterval), op->waitUntil), [this, op] {
      op->timer = 0;
      if (!op->finished) attemptAcquire(op);
    });
  };

  if (!redisUrl_) {
    // Without Redis the pending map is the whole lock, as in single-process mode.
    if (pending_.tryRecord(op->chatId, op->streamId)) return acquired();
    return busy();
  }

  // A cleanup of this very (key, stream) not yet on the wire goes first, so that it cannot delete
  // the lock this attempt may take.
  const auto which = std::make_pair(op->key, op->streamId);
  if (cleanups_.count(which) && !cleanupsSent_.count(which)) sendCleanup(which);

  const Deadline deadline = saturatingAdd(op->sentAt, options_.redis.commandTimeout);
  auto fail = [this, op](const Error& error) {
    countRedisFailure(error);
    op->finish(error);
  };
  // The SET (and its WAIT) must be answered by the deadline: else the acquire fails, and its value
  // is compare-and-deleted right behind them on the same connection.
  auto timedOut = [this, op, fail] {
    op->timer = 0;
    if (op->finished || !op->inFlight) return;
    // The SET may still run (it sits in the socket of a hung server): delete our value right after
    // it, on the same connection, so that this failed acquire leaves no lock behind.
    registerCleanup(op->key, op->streamId, op->sentAt);
    fail(Error(ErrorCode::Timeout, fmt::format("acquiring the lock of chat {} timed out after {} ms", op->chatId,
                                               options_.redis.commandTimeout.count())));
    // After the acquire finished: dropping the connection (Sentinel does) fails the SET at once,
    // and that failure must not finish it a second time, nor be what the caller is told.
    redis().suspect();
  };
  KeyedCommand set{op->key, {}};
  appendCommand(set.resp, {"SET", op->key, op->streamId, "NX", "EX", std::to_string(options_.lock.ttl.count())});
  op->inFlight = true;
  redis().execute({std::move(set)}, deadline, [this, op, attempt, deadline, acquired, busy, fail, timedOut](std::vector<CommandOutcome> outcomes) {
    if (op->finished || attempt != op->attempt) return;
    op->inFlight = false;
    loop_.cancel(op->timer);
    op->timer = 0;
    CommandOutcome& outcome = outcomes.front();
    if (outcome.error) {
      // The SET reached a socket before its connection failed: it may have run.
      if (outcome.written) registerCleanup(op->key, op->streamId, op->sentAt);
      return fail(*outcome.error);
    }
    const ReplyValue* reply = outcome.reply.get();
    if (isErrorReply(reply)) {
      try {
        throwReplyError(reply);
      } catch (const Error& e) {
        return fail(e);
      }
    }
    if (!isStatusOk(reply)) return busy();  // nil: another stream holds it
    if (options_.lock.waitReplicas == 0) return acquired();
    // WAIT on the same connection: the replicas that have this connection's writes, the SET included.
    const auto left = std::chrono::duration_cast<Milliseconds>(deadline - Clock::now());
    KeyedCommand wait{op->key, {}};
    appendCommand(wait.resp, {"WAIT", std::to_string(options_.lock.waitReplicas),
                              std::to_string(std::max<long long>(1, left.count()))});
    op->inFlight = true;
    // A server that hangs after answering the SET must not hold the acquire past its deadline.
    op->timer = loop_.at(deadline, timedOut);
    redis().execute({std::move(wait)}, deadline, [this, op, attempt, acquired, fail](std::vector<CommandOutcome> waited) {
      if (op->finished || attempt != op->attempt) return;
      op->inFlight = false;
      loop_.cancel(op->timer);
      op->timer = 0;
      const CommandOutcome& result = waited.front();
      const long long replicas = !result.error && isInteger(result.reply.get()) ? result.reply->integer : -1;
      if (replicas >= static_cast<long long>(options_.lock.waitReplicas)) return acquired();
      // Too few replicas have it: a failover could lose it. Delete it and fail.
      registerCleanup(op->key, op->streamId, op->sentAt);
      fail(result.error ? *result.error
                        : Error(ErrorCode::Timeout, fmt::format("the lock of chat {} reached {} of the {} replicas asked for",
                                                                op->chatId, std::max(0LL, replicas),
                                                                options_.lock.waitReplicas)));
    });
  });
  op->timer = loop_.at(deadline, timedOut);
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
  KeyedCommand command{which.first, {}};
  // EVAL, not EVALSHA: it cannot meet NOSCRIPT, so it needs no second round. It waits for its
  // answer as long as its connection lives: a hung server runs it right after the SET it follows.
  appendCommand(command.resp, {"EVAL", protocol::kReleaseScript, "1", which.first, which.second});
  redis().execute({std::move(command)}, Deadline::max(), [this, which](std::vector<CommandOutcome> outcomes) {
    const CommandOutcome& outcome = outcomes.front();
    const auto it = cleanups_.find(which);
    if (it == cleanups_.end()) return;
    cleanupsSent_.erase(which);
    if (!outcome.error && !isErrorReply(outcome.reply.get())) {
      if (isIntegerOne(outcome.reply.get())) {
        bump(counters_.orphansCleaned);
        log(LogLevel::Info, "deleted the lock of chat key {} that stream {} left behind (a failed acquire, or a loss reported)",
            which.first, which.second);
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
  // A fork() child's copy of a parent's lock: the lock is the parent's; touch nothing.
  if (forked_.load()) return false;
  std::vector<std::shared_ptr<HeartbeatEntry>> stopped;
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    if (held_.erase({chatId, streamId}) == 0) return false;
    if (redisUrl_) releasePending_.emplace(chatId, streamId);
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
    std::optional<std::pair<std::string, std::string>> onTheWire;  // (key, stream) while in releasing_
  };
  auto state = std::make_shared<Release>(Release{std::move(chatId), std::move(streamId), std::move(done), false, 0, std::nullopt});
  const Deadline deadline = deadlineIn(options_.redis.commandTimeout);
  auto finish = [this, state](ReleaseOutcome outcome, const Error* error) {
    if (state->finished) return;
    state->finished = true;
    loop_.cancel(state->timer);
    if (state->onTheWire) {
      const auto it = releasing_.find(*state->onTheWire);
      if (it != releasing_.end()) releasing_.erase(it);
      if (releasing_.empty() && releasesDrained_) {
        auto drained = std::move(releasesDrained_);
        releasesDrained_ = nullptr;
        drained();
      }
    }
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
    bool mine = false;
    {
      std::lock_guard<std::mutex> guard(heldMutex_);
      mine = releasePending_.erase({state->chatId, state->streamId}) > 0;
    }
    // Not mine any more: a shutdown ran first and deleted it in its pipeline.
    if (closing_ || !mine) {
      state->finished = true;
      pending_.resolve(state->chatId, state->streamId);
      auto callback = std::move(state->done);
      return callback(ReleaseOutcome::AlreadyReleased);
    }
    // A shutdown that comes before the answer waits for it before it closes the connection.
    state->onTheWire.emplace(lockKey(state->chatId), state->streamId);
    releasing_.insert(*state->onTheWire);
    evalScripts(protocol::kReleaseScript, releaseSha_, {{lockKey(state->chatId), state->streamId}}, deadline,
                [finish](std::vector<CommandOutcome> outcomes) {
                  const CommandOutcome& outcome = outcomes.front();
                  if (outcome.error) return finish(ReleaseOutcome::Failed, &*outcome.error);
                  const ReplyValue* reply = outcome.reply.get();
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
      redis().suspect();  // after: the failure it causes at once is not the one reported
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
                             Deadline deadline, std::function<void(std::vector<CommandOutcome>)> done) {
  auto command = [](const std::string& nameAndBody, const std::vector<std::string>& arg, bool byBody) {
    KeyedCommand out{arg.front(), {}};
    std::vector<std::string_view> argv{byBody ? "EVAL" : "EVALSHA", nameAndBody, "1"};
    argv.insert(argv.end(), arg.begin(), arg.end());
    appendCommand(out.resp, argv);
    return out;
  };
  std::vector<KeyedCommand> commands;
  commands.reserve(args.size());
  for (const auto& arg : args) commands.push_back(command(sha, arg, false));
  auto shared = std::make_shared<std::vector<std::vector<std::string>>>(std::move(args));
  redis().execute(std::move(commands), deadline,
                  [this, script, shared, deadline, command, done = std::move(done)](std::vector<CommandOutcome> outcomes) mutable {
                    std::vector<std::size_t> missing;
                    for (std::size_t i = 0; i < outcomes.size(); ++i) {
                      if (!outcomes[i].error && isNoScript(outcomes[i].reply.get())) missing.push_back(i);
                    }
                    if (missing.empty()) return done(std::move(outcomes));
                    // That node lost its script cache (restart, SCRIPT FLUSH, failover): EVAL loads it again.
                    std::vector<KeyedCommand> retry;
                    for (std::size_t i : missing) retry.push_back(command(script, (*shared)[i], true));
                    auto first = std::make_shared<std::vector<CommandOutcome>>(std::move(outcomes));
                    redis().execute(std::move(retry), deadline,
                                    [first, missing = std::move(missing), done = std::move(done)](std::vector<CommandOutcome> second) mutable {
                                      for (std::size_t j = 0; j < missing.size(); ++j) (*first)[missing[j]] = std::move(second[j]);
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

// The moved-from lock keeps its Client (to deliver a release(done) through it, never inline) but no
// longer names a lock: an empty chat id is never held, so it releases nothing.
StreamLock::StreamLock(StreamLock&& other) noexcept
    : client_(other.client_),
      chatId_(std::move(other.chatId_)),
      streamId_(std::move(other.streamId_)),
      acquiredAt_(other.acquiredAt_) {
  other.chatId_.clear();
  other.streamId_.clear();
}

StreamLock::~StreamLock() {
  if (!client_ || chatId_.empty()) return;
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
      if (client_ && !chatId_.empty()) client_->release(chatId_, streamId_, [](ReleaseOutcome) {});
    } catch (...) {
    }
    client_ = other.client_;
    chatId_ = std::move(other.chatId_);
    streamId_ = std::move(other.streamId_);
    acquiredAt_ = other.acquiredAt_;
    other.chatId_.clear();
    other.streamId_.clear();
  }
  return *this;
}

}  // namespace streamlock
