// Heartbeats: every held lock has two timers on the I/O thread. The due timer extends it (the
// extends that fall due in one loop iteration go out as one pipeline); the loss timer reports
// ownership lost once the ownership window has passed since the last successful extend was sent,
// whatever is still in flight, so that the writer stops before the lock can have expired.
#include "client/core.h"
#include "redis/resp.h"

namespace streamlock {
namespace detail {

std::shared_ptr<HeartbeatEntry> ClientCore::startHeartbeat(const std::string& chatId, const std::string& streamId,
                                                           OwnershipLostCallback onLost, Deadline acquiredAt) {
  auto entry = std::make_shared<HeartbeatEntry>();
  entry->chatId = chatId;
  entry->streamId = streamId;
  entry->key = lockKey(chatId);
  entry->onLost = std::move(onLost);
  entry->acquiredAt = acquiredAt;
  if (!redisUrl_) return entry;  // a process-local lock cannot expire
  if (forked_.load()) {
    entry->stopped = true;  // a fork() child never extends its parent's locks
    return entry;
  }
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    if (!held_.count({chatId, streamId})) {
      entry->stopped = true;  // released (or shut down) already
      return entry;
    }
    heartbeatsOf_.emplace(std::make_pair(chatId, streamId), entry);
  }
  const bool posted = onLoop([this, entry] {
    if (closing_ || entry->stopped) return;
    heartbeats_.emplace(entry.get(), entry);
    scheduleHeartbeat(entry, saturatingAdd(entry->acquiredAt, timing_.heartbeatInterval));
    armLossTimer(entry, saturatingAdd(entry->acquiredAt, timing_.ownershipWindow));
  });
  if (!posted) entry->stopped = true;
  return entry;
}

void ClientCore::scheduleHeartbeat(const std::shared_ptr<HeartbeatEntry>& entry, Deadline due) {
  loop_.cancel(entry->dueTimer);
  std::weak_ptr<HeartbeatEntry> weak = entry;
  entry->dueTimer = loop_.at(due, [this, weak] {
    auto self = weak.lock();
    if (!self) return;
    self->dueTimer = 0;
    if (self->stopped) return dropHeartbeat(self.get());
    dueHeartbeats_.push_back(self);
    if (extendScheduled_) return;
    extendScheduled_ = true;
    loop_.atEndOfIteration([this] {
      extendScheduled_ = false;
      extendDue();
    });
  });
}

void ClientCore::armLossTimer(const std::shared_ptr<HeartbeatEntry>& entry, Deadline lossAt) {
  loop_.cancel(entry->lossTimer);
  std::weak_ptr<HeartbeatEntry> weak = entry;
  entry->lossTimer = loop_.at(lossAt, [this, weak] {
    auto self = weak.lock();
    if (!self) return;
    self->lossTimer = 0;
    if (self->stopped) return dropHeartbeat(self.get());
    reportLoss(self, "no extend succeeded in time");
    // The lock may still be this stream's: an extend that timed out can still run (it waits in a
    // hung server's socket) and push the expiry out by a whole TTL, for a stream that has stopped.
    // It is compare-and-deleted in the background, as a failed acquire's possible lock is.
    registerCleanup(self->key, self->streamId, Clock::now());
  });
}

void ClientCore::extendDue() {
  std::vector<std::shared_ptr<HeartbeatEntry>> due;
  due.swap(dueHeartbeats_);
  due.erase(std::remove_if(due.begin(), due.end(), [](const auto& e) { return e->stopped.load(); }), due.end());
  if (due.empty() || closing_) return;
  const Deadline sentAt = Clock::now();
  const std::string ttl = std::to_string(options_.lock.ttl.count());
  std::vector<std::vector<std::string>> args;
  args.reserve(due.size());
  for (const auto& entry : due) {
    args.push_back({entry->key, entry->streamId, ttl});
  }
  // Each lock's extend is its own request, settled on its own: a hung node delays (and fails) only
  // the extends of the locks it holds, never those of locks on other nodes. The requests queued
  // for one node in this loop iteration still go out in one write (one pipeline per node).
  struct Batch {
    std::vector<std::shared_ptr<HeartbeatEntry>> entries;
    std::unique_ptr<bool[]> settled;  // not vector<bool>: GCC 12 -O3 warns of a null dereference in its assign
    std::size_t pending = 0;
    bool errorReported = false;
    Loop::TimerId timer = 0;
  };
  auto batch = std::make_shared<Batch>();
  batch->entries = std::move(due);
  batch->settled = std::make_unique<bool[]>(batch->entries.size());  // all false
  batch->pending = batch->entries.size();

  // An extend that failed (error or deadline) is retried soon; the loss timer keeps running.
  auto failed = [this](const std::shared_ptr<HeartbeatEntry>& entry) {
    bump(counters_.heartbeatsFailed);
    scheduleHeartbeat(entry, saturatingAdd(Clock::now(), timing_.retryDelay));
  };
  const Deadline deadline = saturatingAdd(sentAt, options_.redis.commandTimeout);
  for (std::size_t i = 0; i < batch->entries.size(); ++i) {
    evalScripts(protocol::kExtendScript, extendSha_, {std::move(args[i])}, deadline,
                [this, batch, i, sentAt, failed](std::vector<CommandOutcome> outcomes) {
      if (batch->settled[i]) return;
      batch->settled[i] = true;
      if (--batch->pending == 0) loop_.cancel(batch->timer);
      const auto& entry = batch->entries[i];
      const CommandOutcome& outcome = outcomes.front();
      if (outcome.error) {
        if (!batch->errorReported) {
          batch->errorReported = true;
          countRedisFailure(*outcome.error);
          log(LogLevel::Warning, "heartbeat of chat {} failed (retrying soon): {}", entry->chatId,
              outcome.error->what());
        }
        if (!entry->stopped) failed(entry);
        return;
      }
      if (entry->stopped) return;
      const ReplyValue* reply = outcome.reply.get();
      if (isIntegerOne(reply)) {
        bump(counters_.heartbeatsExtended);
        // The new TTL runs from no earlier than the send: the window and the next extend count from it.
        armLossTimer(entry, saturatingAdd(sentAt, timing_.ownershipWindow));
        scheduleHeartbeat(entry, saturatingAdd(sentAt, timing_.heartbeatInterval));
      } else if (isInteger(reply)) {
        reportLoss(entry, "the lock was deleted or taken over");
      } else {
        log(LogLevel::Warning, "heartbeat of chat {} failed (retrying soon): {}", entry->chatId,
            std::string(replyText(reply)));
        failed(entry);
      }
    });
  }
  if (batch->pending == 0) return;
  batch->timer = loop_.at(deadline, [this, batch, failed] {
    batch->timer = 0;
    std::size_t late = 0;
    for (std::size_t i = 0; i < batch->entries.size(); ++i) {
      if (batch->settled[i]) continue;
      batch->settled[i] = true;
      ++late;
      if (!batch->entries[i]->stopped) failed(batch->entries[i]);
    }
    batch->pending = 0;
    if (late == 0) return;
    redis().suspect();
    countRedisFailure(Error(ErrorCode::Timeout, "heartbeat timed out"));
    log(LogLevel::Warning, "heartbeat of {} stream locks timed out after {} ms (retrying soon)", late,
        options_.redis.commandTimeout.count());
  });
}

void ClientCore::reportLoss(const std::shared_ptr<HeartbeatEntry>& entry, const char* why) {
  if (entry->stopped.exchange(true)) return;
  entry->lost = true;
  dropHeartbeat(entry.get());
  bump(counters_.heartbeatsLost);
  log(LogLevel::Warning, "stream {} lost the lock of chat {} ({}); it must stop producing", entry->streamId,
      entry->chatId, why);
  if (!entry->onLost) return;
  complete([entry] { entry->onLost(entry->chatId, entry->streamId); });
}

void ClientCore::dropHeartbeat(HeartbeatEntry* entry) {
  loop_.cancel(entry->dueTimer);
  loop_.cancel(entry->lossTimer);
  entry->dueTimer = 0;
  entry->lossTimer = 0;
  heartbeats_.erase(entry);
}

}  // namespace detail

// --- Heartbeat -------------------------------------------------------------------------------------

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

Heartbeat StreamLock::startHeartbeat(OwnershipLostCallback onLost) {
  if (!client_ || chatId_.empty()) return Heartbeat();  // moved from
  return Heartbeat(client_->startHeartbeat(chatId_, streamId_, std::move(onLost), acquiredAt_));
}

}  // namespace streamlock
