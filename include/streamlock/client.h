#pragma once

/// @file
/// The Client (the library object), the stream lock and its heartbeat, the counters.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "streamlock/options.h"
#include "streamlock/pending_streams.h"
#include "streamlock/postgres.h"
#include "streamlock/reconcile.h"

namespace streamlock {

namespace detail {
class ClientState;
struct HeartbeatEntry;
}  // namespace detail

struct Metrics;  // streamlock/metrics.h

/// Monotonic counters since the Client was created.
struct Counters {
  std::uint64_t lookupsVerified = 0;      ///< lookups answered by Redis (empty input included)
  std::uint64_t lookupsUnknown = 0;       ///< lookups answered from the pending map only
  std::uint64_t lookupRoundTrips = 0;     ///< Redis round trips of lookups (one pipeline each)
  std::uint64_t redisErrors = 0;          ///< failed Redis calls, timeouts included
  std::uint64_t redisTimeouts = 0;        ///< of which deadlines
  std::uint64_t breakerOpened = 0;        ///< times the breaker opened
  std::uint64_t breakerShortCircuits = 0; ///< lookups answered unknown by an open breaker
  std::uint64_t markersRepaired = 0;      ///< stale markers cleared
  std::uint64_t repairFailures = 0;       ///< repair statements that failed
  std::uint64_t locksAcquired = 0;        ///< acquires that took the lock (Redis or process-local)
  std::uint64_t locksReleased = 0;        ///< compare-and-delete that removed our own value
  std::uint64_t heartbeatsExtended = 0;   ///< extends that found our value and renewed its TTL
  std::uint64_t heartbeatsFailed = 0;     ///< extends that errored and were retried
  std::uint64_t heartbeatsLost = 0;       ///< ownership losses reported
};

/// The Redis circuit breaker (BreakerOptions): whether lookups ask Redis.
enum class BreakerState {
  Closed,    ///< every lookup asks Redis
  Open,      ///< lookups answer unknown at once, without asking Redis, for the cool-down
  HalfOpen,  ///< the cool-down is over: one lookup probes Redis, the others still answer unknown
};

/// "closed", "open" or "half-open".
const char* toString(BreakerState state) noexcept;

/// Redis as a health check sees it (Client::redisStatus()).
struct RedisStatus {
  /// What a live PING found.
  enum class Mode {
    Disabled,  ///< no Redis URL configured
    Verified,  ///< Redis answered PING within the lookup deadline
    Unknown,   ///< Redis is configured and did not answer (or the breaker is open)
  };
  Mode mode = Mode::Disabled;                   ///< what the PING found
  BreakerState breaker = BreakerState::Closed;  ///< the breaker's state at the time
  /// Why the mode is unknown (e.g. "cannot connect to Redis at 127.0.0.1:6390: Connection refused",
  /// or the breaker being open); empty otherwise. Never contains a password.
  std::string detail;
};

/// "disabled", "verified" or "unknown".
const char* toString(RedisStatus::Mode mode) noexcept;

/// Called once, from the heartbeat thread, when a lock is found taken over, deleted, or not
/// extended for a whole TTL. No internal lock is held: it may call StreamLock::release().
using OwnershipLostCallback = std::function<void(const std::string& chatId, const std::string& streamId)>;

/// What StreamLock::release() did.
enum class ReleaseOutcome {
  Released,         ///< our value was deleted (or, without Redis, our local entry removed)
  NotOwner,         ///< the key was gone or held another stream's id: nothing was deleted
  Failed,           ///< Redis failed; the lock expires by its TTL
  AlreadyReleased,  ///< this StreamLock was released before (or the Client shut down)
};

/// "released", "not owner", "failed" or "already released".
const char* toString(ReleaseOutcome outcome) noexcept;

/// Keeps one lock alive: the Client's heartbeat thread extends it every interval with
/// compare-and-expire. Stops on destruction, on stop(), on release of its lock, or on ownership
/// loss. Move-only; all members are thread-safe and return at once.
class Heartbeat {
 public:
  /// A heartbeat that runs nothing (running() is false).
  Heartbeat() = default;
  /// Stops the heartbeat (stop()).
  ~Heartbeat();
  /// Takes over other's heartbeat; other runs nothing afterwards.
  Heartbeat(Heartbeat&& other) noexcept = default;
  /// Stops this heartbeat, then takes over other's.
  Heartbeat& operator=(Heartbeat&& other) noexcept;
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  /// Stops extending the lock (the lock itself stays until released or expired). Idempotent.
  void stop() noexcept;
  /// Whether the heartbeat found the lock taken over, deleted, or not extended for a whole TTL
  /// (the OwnershipLostCallback was called or is about to be).
  bool ownershipLost() const noexcept;
  /// Whether the lock is still being extended: false once stopped, released or lost.
  bool running() const noexcept;

 private:
  friend class StreamLock;
  explicit Heartbeat(std::shared_ptr<detail::HeartbeatEntry> entry);
  std::shared_ptr<detail::HeartbeatEntry> entry_;
};

/// A held lock on one chat. Releases itself (compare-and-delete) on destruction. Move-only.
class StreamLock {
 public:
  /// Releases the lock (release()) if it is still held.
  ~StreamLock();
  /// Takes over other's lock; other holds nothing afterwards.
  StreamLock(StreamLock&& other) noexcept = default;
  /// Releases this lock, then takes over other's.
  StreamLock& operator=(StreamLock&& other) noexcept;
  StreamLock(const StreamLock&) = delete;
  StreamLock& operator=(const StreamLock&) = delete;

  /// The chat this lock is on.
  const std::string& chatId() const noexcept { return chatId_; }
  /// The stream that holds it (the lock's value in Redis).
  const std::string& streamId() const noexcept { return streamId_; }

  /// Starts extending the lock every heartbeat interval. Thread-safe; returns at once.
  /// Without Redis the lock cannot expire and the heartbeat does nothing.
  Heartbeat startHeartbeat(OwnershipLostCallback onLost = {});

  /// Deletes the lock only while it holds our stream id, and removes the pending-map entry.
  /// Thread-safe and idempotent; blocks at most redis.poolSize wait + commandTimeout. Never throws.
  ReleaseOutcome release() noexcept;

 private:
  friend class Client;
  StreamLock(std::shared_ptr<detail::ClientState> client, std::string chatId, std::string streamId,
             std::chrono::steady_clock::time_point acquiredAt);
  std::shared_ptr<detail::ClientState> client_;
  std::string chatId_;
  std::string streamId_;
  std::chrono::steady_clock::time_point acquiredAt_;
};

/// The library object: the pools, the pending map, the breaker, the heartbeat thread and the
/// counters of one application. Two Clients share nothing. Every member is thread-safe.
///
/// fork(): a Client does not survive fork(). The child has no heartbeat thread and shares the
/// parent's sockets; create Clients after forking, and never use a parent's Client in a child.
class Client {
 public:
  /// Validates the options: throws Error(InvalidArgument) for a bad URL or option and
  /// Error(Unsupported) for rediss://. Opens no connection: they open on first use.
  explicit Client(Options options);
  ~Client();  ///< Calls shutdown().
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// The lock owners of a batch of chats. Empty input: verified, no Redis call. Otherwise the whole
  /// batch in one Redis round trip (MGETs pipelined), or unknown with the local owners when Redis
  /// is not configured, failing, or behind an open breaker. Never throws.
  /// Blocks at most options.redis.lookupDeadline.
  ActiveStreams getActiveChatStreamIds(const std::vector<std::string>& chatIds) noexcept;

  /// Reconciles markers read from the database against the locks (see reconcileMarkers) and, with
  /// options.repair, clears the verified-stale ones in one statement before returning.
  ///
  /// Read the markers from the database BEFORE calling this. Read after the lookup, a stream that
  /// started in between has a marker but a lock the lookup did not see, and repair would clear it.
  ///
  /// Only candidates with a marker are looked up. Never throws; a repair failure is logged, counted
  /// and reported in the result. Blocks at most lookupDeadline + the repair bound below (+ a PostgreSQL
  /// connection wait when repairing).
  ReconcileResult reconcileChatStreamMarkers(const std::vector<MarkerCandidate>& candidates,
                                             const ReconcileOptions& options = {}) noexcept;

  /// Compare-and-clear of all the given markers in ONE statement:
  ///   UPDATE table SET marker = NULL WHERE (id, marker) matches a given pair.
  /// Writes only the marker column. Never throws; needs PostgreSQL configured (else failed).
  /// Blocks at most repair.lockTimeout (waiting for a repair connection) + repair.statementTimeout +
  /// repair.lockTimeout, plus a one-time column-type lookup.
  RepairResult repairStaleMarkers(const std::vector<StaleMarker>& markers) noexcept;

  /// Writer side: SET key streamId NX EX ttl, and records the stream in the pending map.
  /// nullopt when another stream holds the lock past waitFor (zero: do not wait).
  /// Throws Error when Redis fails (ConnectFailed, Timeout, ...) or on an empty chat or stream id.
  /// Blocks at most waitFor + commandTimeout (+ a pool wait).
  std::optional<StreamLock> acquireStreamLock(const std::string& chatId, const std::string& streamId,
                                              Milliseconds waitFor = Milliseconds{0});

  /// Writer protocol step 2 on the repair table: sets the chat's marker to streamId. Returns
  /// whether a row changed (false: no such chat). Throws Error on database failure.
  /// Blocks at most as PgPool::execute().
  bool writeMarker(const std::string& chatId, const std::string& streamId);
  /// Writer protocol step 4: clears the chat's marker only while it still holds streamId
  /// (compare-and-clear). Returns whether a row changed. Throws Error on database failure.
  /// Blocks at most as PgPool::execute().
  bool clearMarker(const std::string& chatId, const std::string& streamId);

  /// Redis as a health check would see it: disabled, or the answer of a PING within the lookup
  /// deadline (unknown at once while the breaker is open). Never throws.
  RedisStatus redisStatus() noexcept;

  /// The process-local map chatId -> streamId of this Client's streams.
  PendingStreams& pendingStreams() noexcept;
  /// The PostgreSQL pool, or nullptr when no conninfo was given.
  PgPool* postgres() noexcept;
  /// The counters since this Client was created. Never blocks.
  Counters counters() const noexcept;
  /// The counters, gauges (locks held, pool connections) and latency histograms, for any metrics
  /// library to export; see streamlock/metrics.h, which defines Metrics. Thread-safe; never touches
  /// the network (a few short mutex holds).
  Metrics metrics() const noexcept;
  /// The breaker's state now. Never touches the network.
  BreakerState breakerState() const noexcept;
  /// The options, as validated by the constructor (an empty logger replaced by logToStderr).
  const Options& options() const noexcept;

  /// Stops and joins the heartbeat thread, releases every lock still held (best effort, one
  /// pipeline), and closes the pools. Later calls answer unknown / throw Error(ShutDown).
  /// Idempotent. Blocks at most commandTimeout + a pool wait.
  void shutdown() noexcept;

 private:
  std::shared_ptr<detail::ClientState> state_;
};

}  // namespace streamlock
