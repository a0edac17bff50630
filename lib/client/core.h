#pragma once

// ClientCore: what a Client is made of, and who may touch what.
//   - Constructed and read-only afterwards: the options, the logger, the scripts' SHA1s.
//   - Any thread, each behind its own small lock: the pending map, the breaker, the held locks,
//     the counters (atomics).
//   - The I/O thread only (loop_): the Redis connection, the PostgreSQL pools' connections, every
//     operation in flight, the heartbeats' timing and the orphan cleanups.
// Each file of lib/client/ owns one idea: core.cpp (lifecycle, shutdown, fork), options.cpp (their
// validation), lookup.cpp (the read path), locks.cpp (acquire, release, orphan cleanup),
// heartbeats.cpp, repair.cpp (repair and markers), breaker.cpp, delivery.cpp.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "client/breaker.h"
#include "client/delivery.h"
#include "client/latency.h"
#include "io/clock.h"
#include "io/loop.h"
#include "redis/topology.h"
#include "redis/url.h"
#include "streamlock/client.h"
#include "streamlock/protocol.h"

namespace streamlock::detail {

struct StatementLimits;  // pg/connection.h

struct AtomicCounters {
  std::atomic<std::uint64_t> lookupsVerified{0};
  std::atomic<std::uint64_t> lookupsUnknown{0};
  std::atomic<std::uint64_t> lookupRoundTrips{0};
  std::atomic<std::uint64_t> redisErrors{0};
  std::atomic<std::uint64_t> redisTimeouts{0};
  std::atomic<std::uint64_t> breakerOpened{0};
  std::atomic<std::uint64_t> breakerShortCircuits{0};
  std::atomic<std::uint64_t> markersRepaired{0};
  std::atomic<std::uint64_t> repairFailures{0};
  std::atomic<std::uint64_t> locksAcquired{0};
  std::atomic<std::uint64_t> locksReleased{0};
  std::atomic<std::uint64_t> heartbeatsExtended{0};
  std::atomic<std::uint64_t> heartbeatsFailed{0};
  std::atomic<std::uint64_t> heartbeatsLost{0};
  std::atomic<std::uint64_t> orphansCleaned{0};

  Counters snapshot() const noexcept;
};

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
  counter.fetch_add(by, std::memory_order_relaxed);
}

// One lock kept alive by the I/O thread.
struct HeartbeatEntry {
  std::string chatId;
  std::string streamId;
  std::string key;
  OwnershipLostCallback onLost;
  std::atomic<bool> stopped{false};  // any thread: stop(), release, loss, shutdown
  std::atomic<bool> lost{false};
  // I/O thread only.
  Deadline acquiredAt{};
  Loop::TimerId dueTimer = 0;
  Loop::TimerId lossTimer = 0;
};

// Something in flight on the I/O thread that shutdown() must complete.
class Operation {
 public:
  virtual ~Operation() = default;
  virtual void abortForShutdown() = 0;
};

// A lookup's outcome, positional: owners[i] is the owner of the i-th chat asked (empty: none).
struct LookupAnswer {
  LookupStatus status = LookupStatus::Unknown;
  std::vector<std::string> owners;
};

class ClientCore : public std::enable_shared_from_this<ClientCore> {
 public:
  explicit ClientCore(Options options);
  ~ClientCore();
  ClientCore(const ClientCore&) = delete;
  ClientCore& operator=(const ClientCore&) = delete;

  // --- core.cpp ---------------------------------------------------------------------------------
  void shutdown() noexcept;
  // Not shut down (or shutting down), and not a fork() child's copy of a parent's Client.
  bool usable() const noexcept { return !shutDown_.load(std::memory_order_acquire) && !forked_.load(); }
  // Whether the caller is this Client's I/O thread.
  bool onIoThread() const noexcept { return loop_.inLoopThread(); }
  // ~Client on the I/O thread: the loop thread keeps self (the Client's reference) until it has
  // left its loop, which it does once the shutdown (begun here unless it was already) finished.
  void releaseOnLoopThread(std::shared_ptr<ClientCore> self) noexcept;
  // Runs task on the I/O thread; false (task dropped) when the Client is not usable any more.
  bool onLoop(Loop::Task task);
  // Hands a completion to the executor or the callback thread; after shutdown, to the executor if
  // there is one, else runs it inline (the one documented exception to "never inside the call").
  void complete(std::function<void()> task) noexcept;
  // Registers an operation in flight (I/O thread); returns its key for finished().
  std::uint64_t started(std::shared_ptr<Operation> operation);
  void finished(std::uint64_t key) noexcept;

  template <typename... Args>
  void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) const noexcept {
    try {
      logger_(level, fmt::format(format, std::forward<Args>(args)...));
    } catch (...) {
      // A logger that throws must not take the caller down.
    }
  }
  void countRedisFailure(const Error& error) noexcept;
  std::string lockKey(const std::string& chatId) const { return protocol::lockKey(options_.lock.keyPrefix, chatId); }

  // fork() support (fork.cpp).
  void lockForFork() noexcept;
  void unlockAfterFork(bool child) noexcept;

  // --- lookup.cpp -------------------------------------------------------------------------------
  // Looks up the owners of *chatIds[i] on the I/O thread; done runs there. The pointed-to strings
  // must live until done ran.
  void lookup(std::vector<const std::string*> chatIds, std::function<void(LookupAnswer)> done);
  void reconcile(const std::vector<MarkerCandidate>* candidates, ReconcileOptions options,
                 std::function<void(ReconcileResult)> done);
  void redisStatus(std::function<void(RedisStatus)> done);

  // --- locks.cpp --------------------------------------------------------------------------------
  // The outcome of an acquire: when the winning SET was sent; nullopt when busy.
  using AcquireOutcome = Result<std::optional<Deadline>>;
  void acquire(std::string chatId, std::string streamId, Milliseconds waitFor, std::function<void(AcquireOutcome)> done);
  // Takes the lock out of the held set; AlreadyReleased when it was not there.
  bool takeHeld(const std::string& chatId, const std::string& streamId);
  void release(std::string chatId, std::string streamId, std::function<void(ReleaseOutcome)> done);
  StreamLock makeLock(std::string chatId, std::string streamId, Deadline acquiredAt);

  // --- heartbeats.cpp ---------------------------------------------------------------------------
  std::shared_ptr<HeartbeatEntry> startHeartbeat(const std::string& chatId, const std::string& streamId,
                                                 OwnershipLostCallback onLost, Deadline acquiredAt);

  // --- repair.cpp -------------------------------------------------------------------------------
  void repair(std::vector<StaleMarker> markers, std::function<void(RepairResult)> done);
  void updateMarker(std::string chatId, std::optional<std::string> streamId, std::string expected,
                    std::function<void(Result<bool>)> done);

  const Options options_;
  const Logger logger_;
  const protocol::WriterTiming timing_;
  const std::optional<RedisUrl> redisUrl_;
  PendingStreams pending_;
  Breaker breaker_;
  AtomicCounters counters_;
  // For Client::metrics().
  LatencyRecorder lookupLatency_;
  LatencyRecorder repairLatency_;
  const std::shared_ptr<RedisGauges> redisGauges_ = std::make_shared<RedisGauges>();
  std::size_t locksHeld();

 private:
  friend class Client;
  friend class AcquireOperation;

  // core.cpp
  void shutdownOnLoop(std::function<void()> done);
  // Loop thread: shutdownOnLoop at the end of this iteration, then markShutdownFinished (and the
  // loop stopped when the Client was destroyed on this thread).
  void beginShutdownOnLoop() noexcept;
  void markShutdownFinished() noexcept;
  void abandonAfterFork() noexcept;
  RedisTopology& redis();

  // lookup.cpp
  void finishLookup(LookupAnswer& answer, const std::vector<const std::string*>& chatIds);

  // locks.cpp
  void attemptAcquire(std::shared_ptr<class AcquireOperation> op);
  void registerCleanup(const std::string& key, const std::string& streamId, Deadline sentAt);
  void sendCleanup(const std::pair<std::string, std::string>& which);
  void queueUnsentCleanups();
  // Sends EVALSHA of a script for each of args ({key, argv...}) to its key's node, falling back to
  // EVAL on NOSCRIPT (each node has its own script cache); one outcome per args, in order.
  void evalScripts(const char* script, const std::string& sha, std::vector<std::vector<std::string>> args,
                   Deadline deadline, std::function<void(std::vector<CommandOutcome>)> done);

  // heartbeats.cpp
  void scheduleHeartbeat(const std::shared_ptr<HeartbeatEntry>& entry, Deadline due);
  void armLossTimer(const std::shared_ptr<HeartbeatEntry>& entry, Deadline lossAt);
  void extendDue();
  void reportLoss(const std::shared_ptr<HeartbeatEntry>& entry, const char* why);
  void dropHeartbeat(HeartbeatEntry* entry);
  void stopHeartbeats(const std::string& chatId, const std::string& streamId);

  // repair.cpp
  void runRepair(std::vector<StaleMarker> markers, Deadline deadline, std::function<void(RepairResult)> done);
  // runRepair's fallback after a data exception: each marker in a statement of its own.
  void repairEach(const std::string& sql, const std::shared_ptr<const std::vector<StaleMarker>>& stale,
                  const StatementLimits& limits, std::function<void(Result<RepairResult>)> finish);

  const std::shared_ptr<Delivery> delivery_;
  std::shared_ptr<TlsContext> tls_;  // rediss://: made (and its files checked) by the constructor
  std::atomic<bool> shutDown_{false};
  // Set once shutdownOnLoop() finished (or there was no loop to run it): a shutdown() that did not
  // begin it waits for it before stopping the loop.
  std::mutex shutdownMutex_;
  std::condition_variable shutdownDone_;
  bool shutdownFinished_ = false;
  bool quitWhenShutDown_ = false;  // loop thread: the Client was destroyed there (releaseOnLoopThread)
  std::atomic<bool> forked_{false};
  const int pid_;
  std::string extendSha_;
  std::string releaseSha_;

  // Any thread: the locks this Client holds (released at shutdown) and their heartbeats.
  std::mutex heldMutex_;
  std::set<std::pair<std::string, std::string>> held_;
  // Taken out of held_ by a release whose task has not reached the I/O thread yet: a shutdown that
  // runs first deletes them in its pipeline (the release then answers AlreadyReleased).
  std::set<std::pair<std::string, std::string>> releasePending_;
  std::multimap<std::pair<std::string, std::string>, std::weak_ptr<HeartbeatEntry>> heartbeatsOf_;

  // The repair statement, known once the column types were looked up.
  std::mutex repairMutex_;
  std::string repairSql_;

  // The I/O thread. Everything declared after it uses it and is destroyed before it (members are
  // destroyed in reverse order), once shutdown() has joined the thread.
  Loop loop_;

 public:
  std::unique_ptr<PgPool> postgres_;        // the main pool (Client::postgres()), on loop_
  std::unique_ptr<PgPool> repairPostgres_;  // sessions with lock_timeout / statement_timeout, on loop_

 private:
  // I/O thread only.
  bool closing_ = false;  // shutdownOnLoop ran: what reaches the loop after it fails at once
  std::unique_ptr<RedisTopology> redis_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Operation>> inFlight_;
  std::uint64_t nextOperation_ = 1;
  std::unordered_map<HeartbeatEntry*, std::shared_ptr<HeartbeatEntry>> heartbeats_;
  std::vector<std::shared_ptr<HeartbeatEntry>> dueHeartbeats_;
  bool extendScheduled_ = false;
  std::map<std::pair<std::string, std::string>, Deadline> cleanups_;  // (key, stream) -> lock expiry
  std::set<std::pair<std::string, std::string>> cleanupsSent_;        // of which queued on the connection
  std::multiset<std::pair<std::string, std::string>> releasing_;      // (key, stream) of releases on the wire
  std::function<void()> releasesDrained_;  // a shutdown waiting for releasing_ to empty
};

}  // namespace streamlock::detail
