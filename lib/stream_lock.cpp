// The writer side: acquire, heartbeat and release of the per-chat Redis lock.
#include <hiredis/hiredis.h>

#include <algorithm>

#include "client_state.h"
#include "redis_reply.h"
#include "streamlock/error.h"

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

Milliseconds ClientState::heartbeatInterval() const {
  if (options_.lock.heartbeatInterval > Milliseconds{0}) return options_.lock.heartbeatInterval;
  return std::chrono::duration_cast<Milliseconds>(options_.lock.ttl) / 3;
}

// An extend that errored is retried soon: within a second or a quarter interval.
Milliseconds ClientState::heartbeatRetry() const { return std::min(Milliseconds{1000}, heartbeatInterval() / 4); }

std::optional<Deadline> ClientState::acquire(const std::string& chatId, const std::string& streamId,
                                             Milliseconds waitFor) {
  if (chatId.empty() || streamId.empty()) {
    throw Error(ErrorCode::InvalidArgument, "a stream lock needs a chat id and a stream id");
  }
  if (shutDown_) throw Error(ErrorCode::ShutDown, "the client is shut down");
  const Deadline waitUntil = Clock::now() + waitFor;
  Deadline sentAt;

  if (!redis_) {
    // Without Redis the pending map is the whole lock, as in single-process mode.
    for (;;) {
      sentAt = Clock::now();
      if (pending_.tryRecord(chatId, streamId)) break;
      if (sentAt >= waitUntil) return std::nullopt;
      pending_.waitUntilReleased(chatId, std::chrono::duration_cast<Milliseconds>(waitUntil - sentAt) + Milliseconds{1});
    }
  } else {
    const std::string key = lockKey(chatId);
    const std::string ttl = std::to_string(options_.lock.ttl.count());
    for (;;) {
      sentAt = Clock::now();
      try {
        Deadline deadline = sentAt + options_.redis.commandTimeout;
        auto lease = redis_->acquire(deadline);
        Reply reply = lease->command({"SET", key, streamId, "NX", "EX", ttl}, deadline);
        throwIfError(reply.get());
        if (reply->type == REDIS_REPLY_STATUS) break;  // OK: ours
      } catch (const Error& e) {
        if (e.code() != ErrorCode::PoolExhausted) countRedisFailure(e);
        throw;
      }
      // Nil: another stream holds it. Wait for it to finish, up to waitFor.
      Deadline now = Clock::now();
      if (now >= waitUntil) return std::nullopt;
      std::this_thread::sleep_for(std::min<Clock::duration>(options_.lock.acquirePollInterval, waitUntil - now));
    }
    pending_.record(chatId, streamId);
  }
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    held_.emplace(chatId, streamId);
  }
  bump(counters_.locksAcquired);
  return sentAt;
}

ReleaseOutcome ClientState::release(const std::string& chatId, const std::string& streamId) noexcept {
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    if (held_.erase({chatId, streamId}) == 0) return ReleaseOutcome::AlreadyReleased;
  }
  {
    std::lock_guard<std::mutex> guard(heartbeatMutex_);
    for (const auto& entry : heartbeats_) {
      if (entry->chatId == chatId && entry->streamId == streamId) entry->stopped = true;
    }
  }
  ReleaseOutcome outcome = ReleaseOutcome::NotOwner;
  if (!redis_) {
    if (pending_.resolve(chatId, streamId)) outcome = ReleaseOutcome::Released;
  } else {
    try {
      const std::string key = lockKey(chatId);
      auto replies = evalScript(releaseScript_, {{"1", key, streamId}}, deadlineIn(options_.redis.commandTimeout));
      throwIfError(replies.front().get());
      if (isIntegerOne(replies.front().get())) outcome = ReleaseOutcome::Released;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::PoolExhausted) countRedisFailure(e);
      log(LogLevel::Warning, "releasing the stream lock of chat {} failed (it expires by its TTL): {}", chatId, e.what());
      outcome = ReleaseOutcome::Failed;
    }
    pending_.resolve(chatId, streamId);
  }
  if (outcome == ReleaseOutcome::Released) bump(counters_.locksReleased);
  return outcome;
}

std::shared_ptr<HeartbeatEntry> ClientState::startHeartbeat(const std::string& chatId, const std::string& streamId,
                                                            OwnershipLostCallback onLost, Deadline acquiredAt) {
  auto entry = std::make_shared<HeartbeatEntry>();
  entry->chatId = chatId;
  entry->streamId = streamId;
  entry->onLost = std::move(onLost);
  entry->lastExtended = acquiredAt;
  entry->due = acquiredAt + heartbeatInterval();
  if (!redis_) return entry;  // a process-local lock cannot expire

  std::lock_guard<std::mutex> guard(heartbeatMutex_);
  if (heartbeatStopping_) {
    entry->stopped = true;
    return entry;
  }
  heartbeats_.push_back(entry);
  if (!heartbeatThread_.joinable()) heartbeatThread_ = std::thread([this] { heartbeatLoop(); });
  heartbeatWake_.notify_one();
  return entry;
}

// One pipeline of compare-and-expire for every due lock.
std::vector<ClientState::Extension> ClientState::extend(const std::vector<std::shared_ptr<HeartbeatEntry>>& due) noexcept {
  std::vector<Extension> out(due.size(), Extension::Failed);
  try {
    const std::string ttl = std::to_string(options_.lock.ttl.count());
    std::vector<std::string> keys;
    keys.reserve(due.size());
    for (const auto& entry : due) keys.push_back(lockKey(entry->chatId));
    std::vector<Argv> args;
    args.reserve(due.size());
    for (std::size_t i = 0; i < due.size(); ++i) args.push_back({"1", keys[i], due[i]->streamId, ttl});

    auto replies = evalScript(extendScript_, args, deadlineIn(options_.redis.commandTimeout));
    for (std::size_t i = 0; i < replies.size(); ++i) {
      const redisReply* reply = replies[i].get();
      if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) continue;  // failed: retried soon
      out[i] = isIntegerOne(reply) ? Extension::Extended : Extension::Lost;
    }
  } catch (const Error& e) {
    if (e.code() != ErrorCode::PoolExhausted) countRedisFailure(e);
    log(LogLevel::Warning, "heartbeat of {} stream locks failed (retrying soon): {}", due.size(), e.what());
  } catch (const std::exception& e) {
    log(LogLevel::Error, "heartbeat failed unexpectedly: {}", e.what());
  }
  return out;
}

void ClientState::heartbeatLoop() {
  std::unique_lock<std::mutex> lock(heartbeatMutex_);
  while (!heartbeatStopping_) {
    heartbeats_.erase(std::remove_if(heartbeats_.begin(), heartbeats_.end(), [](const auto& e) { return e->stopped.load(); }),
                      heartbeats_.end());
    if (heartbeats_.empty()) {
      heartbeatWake_.wait(lock);
      continue;
    }
    Deadline next = heartbeats_.front()->due;
    for (const auto& entry : heartbeats_) next = std::min(next, entry->due);
    Deadline now = Clock::now();
    if (next > now) {
      heartbeatWake_.wait_until(lock, next);
      continue;
    }
    std::vector<std::shared_ptr<HeartbeatEntry>> due;
    for (const auto& entry : heartbeats_) {
      if (entry->due <= now) due.push_back(entry);
    }

    lock.unlock();
    std::vector<Extension> outcomes = extend(due);
    lock.lock();

    Deadline done = Clock::now();
    std::vector<std::shared_ptr<HeartbeatEntry>> lost;
    for (std::size_t i = 0; i < due.size(); ++i) {
      HeartbeatEntry& entry = *due[i];
      Extension outcome = outcomes[i];
      if (outcome == Extension::Extended) {
        bump(counters_.heartbeatsExtended);
        entry.lastExtended = now;  // sent at or after now: the new TTL runs from no earlier
        entry.due = now + heartbeatInterval();
        continue;
      }
      if (outcome == Extension::Failed) {
        bump(counters_.heartbeatsFailed);
        entry.due = done + heartbeatRetry();
        // A whole TTL without an extend: the lock has certainly expired by now.
        if (done - entry.lastExtended < options_.lock.ttl) continue;
      }
      if (!entry.stopped.exchange(true)) {
        entry.lost = true;
        lost.push_back(due[i]);
      }
    }
    if (lost.empty()) continue;

    // Callbacks run without any internal lock, so that they may release or stop.
    lock.unlock();
    for (const auto& entry : lost) {
      bump(counters_.heartbeatsLost);
      log(LogLevel::Warning, "stream {} lost the lock of chat {}; it must stop producing", entry->streamId, entry->chatId);
      if (!entry->onLost) continue;
      try {
        entry->onLost(entry->chatId, entry->streamId);
      } catch (const std::exception& e) {
        log(LogLevel::Error, "ownership-lost callback threw: {}", e.what());
      } catch (...) {
        log(LogLevel::Error, "ownership-lost callback threw");
      }
    }
    lock.lock();
  }
}

void ClientState::shutdown() noexcept {
  if (shutDown_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> guard(heartbeatMutex_);
    heartbeatStopping_ = true;
    for (const auto& entry : heartbeats_) entry->stopped = true;
  }
  heartbeatWake_.notify_all();
  if (heartbeatThread_.joinable()) {
    // Shut down from an ownership-lost callback: the thread cannot join itself, and it stops on
    // its own once the callback returns.
    if (heartbeatThread_.get_id() == std::this_thread::get_id()) {
      heartbeatThread_.detach();
    } else {
      heartbeatThread_.join();
    }
  }

  std::set<std::pair<std::string, std::string>> held;
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    held.swap(held_);
  }
  if (redis_ && !held.empty()) {
    try {
      std::vector<std::string> keys;
      std::vector<Argv> args;
      keys.reserve(held.size());
      for (const auto& [chatId, streamId] : held) keys.push_back(lockKey(chatId));
      std::size_t i = 0;
      for (const auto& [chatId, streamId] : held) args.push_back({"1", keys[i++], streamId});
      auto replies = evalScript(releaseScript_, args, deadlineIn(options_.redis.commandTimeout));
      for (const auto& reply : replies) {
        if (isIntegerOne(reply.get())) bump(counters_.locksReleased);
      }
    } catch (const std::exception& e) {
      log(LogLevel::Warning, "releasing {} stream locks at shutdown failed (they expire by their TTL): {}", held.size(),
          e.what());
    }
  }
  pending_.clear();
  if (redis_) redis_->close();
  if (postgres_) postgres_->close();
  if (repairPostgres_) repairPostgres_->close();
}

}  // namespace detail

Heartbeat::Heartbeat(std::shared_ptr<detail::HeartbeatEntry> entry) : entry_(std::move(entry)) {}

Heartbeat::~Heartbeat() { stop(); }

Heartbeat& Heartbeat::operator=(Heartbeat&& other) noexcept {
  if (this != &other) {
    stop();
    entry_ = std::move(other.entry_);
  }
  return *this;
}

void Heartbeat::stop() noexcept {
  if (entry_) entry_->stopped = true;
}

bool Heartbeat::ownershipLost() const noexcept { return entry_ && entry_->lost; }

bool Heartbeat::running() const noexcept { return entry_ && !entry_->stopped && !entry_->lost; }

StreamLock::StreamLock(std::shared_ptr<detail::ClientState> client, std::string chatId, std::string streamId,
                       std::chrono::steady_clock::time_point acquiredAt)
    : client_(std::move(client)), chatId_(std::move(chatId)), streamId_(std::move(streamId)), acquiredAt_(acquiredAt) {}

StreamLock::~StreamLock() { release(); }

StreamLock& StreamLock::operator=(StreamLock&& other) noexcept {
  if (this != &other) {
    release();
    client_ = std::move(other.client_);
    chatId_ = std::move(other.chatId_);
    streamId_ = std::move(other.streamId_);
    acquiredAt_ = other.acquiredAt_;
  }
  return *this;
}

Heartbeat StreamLock::startHeartbeat(OwnershipLostCallback onLost) {
  if (!client_) return Heartbeat();
  return Heartbeat(client_->startHeartbeat(chatId_, streamId_, std::move(onLost), acquiredAt_));
}

ReleaseOutcome StreamLock::release() noexcept {
  // client_ stays set: the Client's record of held locks makes a second release (from another
  // thread, e.g. an ownership-lost callback) answer AlreadyReleased.
  if (!client_) return ReleaseOutcome::AlreadyReleased;
  return client_->release(chatId_, streamId_);
}

std::optional<StreamLock> Client::acquireStreamLock(const std::string& chatId, const std::string& streamId,
                                                    Milliseconds waitFor) {
  std::optional<detail::Deadline> acquiredAt = state_->acquire(chatId, streamId, waitFor);
  if (!acquiredAt) return std::nullopt;
  return StreamLock(state_, chatId, streamId, *acquiredAt);
}

}  // namespace streamlock
