#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "breaker.h"
#include "io.h"
#include "latency.h"
#include "redis_pool.h"
#include "redis_url.h"
#include "streamlock/client.h"

namespace streamlock::detail {

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

  Counters snapshot() const noexcept;
};

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
  counter.fetch_add(by, std::memory_order_relaxed);
}

// One lock kept alive by the heartbeat thread. The scheduler owns the timing fields.
struct HeartbeatEntry {
  std::string chatId;
  std::string streamId;
  OwnershipLostCallback onLost;
  std::atomic<bool> stopped{false};
  std::atomic<bool> lost{false};
  Deadline due{};
  Deadline lastExtended{};
};

// A Lua script run by EVALSHA, loaded on first use and again after NOSCRIPT (SCRIPT FLUSH, a
// restarted or failed-over server).
class Script {
 public:
  explicit Script(const char* source) : source_(source) {}
  const char* source() const noexcept { return source_; }
  // The SHA1 of a SCRIPT LOAD, or empty before the first one.
  std::string sha() const;
  void setSha(std::string sha);

 private:
  const char* source_;
  mutable std::mutex mutex_;
  std::string sha_;
};

class ClientState {
 public:
  explicit ClientState(Options options);
  ~ClientState();

  template <typename... Args>
  void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) const noexcept {
    try {
      logger_(level, fmt::format(format, std::forward<Args>(args)...));
    } catch (...) {
      // A logger that throws must not take the caller down.
    }
  }

  std::string lockKey(const std::string& chatId) const { return options_.lock.keyPrefix + chatId; }

  // The lookup (client.cpp).
  // owners[i] becomes the owner of *chatIds[i] (lock owner, or local owner when unknown), empty
  // for none. Positional, so that no map is built on the read path.
  LookupStatus lookup(const std::vector<const std::string*>& chatIds, std::vector<std::string>& owners) noexcept;
  std::vector<std::string> mget(const std::vector<const std::string*>& chatIds, Deadline deadline);
  RedisStatus redisStatus() noexcept;
  void countRedisFailure(const Error& error) noexcept;

  // Runs each command as EVALSHA of the script, in one pipeline, falling back to SCRIPT LOAD +
  // EVALSHA on NOSCRIPT. args are the KEYS/ARGV after the script: {"1", key, argv...}.
  std::vector<Reply> evalScript(Script& script, const std::vector<Argv>& args, Deadline deadline);

  // The repair (repair.cpp).
  RepairResult repair(const std::vector<StaleMarker>& markers) noexcept;
  bool updateMarker(const std::string& chatId, const std::string* streamId, const std::string& expected);

  // The lock (stream_lock.cpp).
  // When acquired, the time the winning SET was sent (the lock's TTL runs from no earlier).
  std::optional<Deadline> acquire(const std::string& chatId, const std::string& streamId, Milliseconds waitFor);
  ReleaseOutcome release(const std::string& chatId, const std::string& streamId) noexcept;
  std::shared_ptr<HeartbeatEntry> startHeartbeat(const std::string& chatId, const std::string& streamId,
                                                 OwnershipLostCallback onLost, Deadline acquiredAt);
  void shutdown() noexcept;

  // Locks acquired and not yet released (metrics.cpp).
  std::size_t locksHeld();

  const Options options_;
  const Logger logger_;
  const std::optional<RedisUrl> redisUrl_;
  std::unique_ptr<RedisPool> redis_;
  std::unique_ptr<PgPool> postgres_;
  std::unique_ptr<PgPool> repairPostgres_;
  PendingStreams pending_;
  Breaker breaker_;
  AtomicCounters counters_;
  LatencyRecorder lookupLatency_;  // every lookup() (client.cpp)
  LatencyRecorder repairLatency_;  // every repair() with markers (repair.cpp)
  std::atomic<bool> shutDown_{false};
  Script extendScript_;
  Script releaseScript_;

 private:
  void heartbeatLoop();
  enum class Extension { Extended, Lost, Failed };
  std::vector<Extension> extend(const std::vector<std::shared_ptr<HeartbeatEntry>>& due) noexcept;
  std::string repairStatement();

  Milliseconds heartbeatInterval() const;
  Milliseconds heartbeatRetry() const;

  // Locks this Client holds, released at shutdown.
  std::mutex heldMutex_;
  std::set<std::pair<std::string, std::string>> held_;

  // The heartbeat thread, started with the first heartbeat.
  std::mutex heartbeatMutex_;
  std::condition_variable heartbeatWake_;
  std::vector<std::shared_ptr<HeartbeatEntry>> heartbeats_;
  std::thread heartbeatThread_;
  bool heartbeatStopping_ = false;

  // The repair statement, built once the column types are known.
  std::mutex repairMutex_;
  std::string repairSql_;
};

}  // namespace streamlock::detail
