#pragma once

/// @file
/// The library object (Client), the writer's lock (StreamLock) and its heartbeat (Heartbeat).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "streamlock/completion.h"
#include "streamlock/options.h"
#include "streamlock/pending_streams.h"
#include "streamlock/postgres.h"
#include "streamlock/reconcile.h"

namespace streamlock {

struct Metrics;  // streamlock/metrics.h

namespace detail {
class ClientCore;
struct HeartbeatEntry;
}  // namespace detail

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
  std::uint64_t locksAcquired = 0;        ///< acquires that took the lock
  std::uint64_t locksReleased = 0;        ///< compare-and-delete that removed our own value
  std::uint64_t heartbeatsExtended = 0;   ///< successful compare-and-expires
  std::uint64_t heartbeatsFailed = 0;     ///< extends that errored or timed out (retried soon)
  std::uint64_t heartbeatsLost = 0;       ///< ownership losses reported
  std::uint64_t orphansCleaned = 0;       ///< locks compare-and-deleted in the background: a failed acquire's, or one whose loss was reported
};

/// The Redis circuit breaker of the read path.
enum class BreakerState { Closed, Open, HalfOpen };

/// "closed", "open" or "half-open".
const char* toString(BreakerState state) noexcept;

/// Redis as a health check sees it.
struct RedisStatus {
  /// Disabled: no URL; Verified: every master answered a PING in time; Unknown: it did not.
  enum class Mode { Disabled, Verified, Unknown };
  Mode mode = Mode::Disabled;                   ///< what the PING found
  BreakerState breaker = BreakerState::Closed;  ///< the read path's breaker now
  std::string detail;  ///< why it is unknown (e.g. "connection refused"); never a password
};

/// "disabled", "verified" or "unknown".
const char* toString(RedisStatus::Mode mode) noexcept;

/// Told once that a held lock was lost: found taken over or deleted by an extend, or not extended
/// in time (see protocol::WriterTiming::ownershipWindow): the writer must stop producing at once.
/// Runs on Options::executor, else on the library's callback thread, with no internal lock held:
/// it may call anything, release() and shutdown() included, and may destroy the Client.
using OwnershipLostCallback = std::function<void(const std::string& chatId, const std::string& streamId)>;

/// How a release ended.
enum class ReleaseOutcome {
  Released,         ///< our value was deleted (or, without Redis, our local entry removed)
  NotOwner,         ///< the key was gone or held another stream's id: nothing was deleted
  Failed,           ///< Redis failed; the lock expires by its TTL
  AlreadyReleased,  ///< this StreamLock was released before (or the Client shut down)
};

/// "released", "not owner", "failed" or "already released".
const char* toString(ReleaseOutcome outcome) noexcept;

/// Keeps one lock alive: the Client's I/O thread extends it every heartbeat interval with
/// compare-and-expire, and reports ownership lost when an extend finds another owner or no key, or
/// when no extend succeeded within the ownership window. Stops on destruction, on stop(), on release
/// of its lock, on ownership loss and at the Client's shutdown. Default-constructible (not running)
/// and move-only. Every member is thread-safe and returns at once.
class [[nodiscard]] Heartbeat {
 public:
  Heartbeat() = default;
  ~Heartbeat();
  /// Moves the heartbeat; the moved-from one is not running.
  Heartbeat(Heartbeat&&) noexcept = default;
  /// Stops this heartbeat, then takes other's.
  Heartbeat& operator=(Heartbeat&& other) noexcept;
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  /// Stops extending the lock (which then expires by its TTL unless released). Idempotent.
  void stop() noexcept;
  /// Whether ownership was lost (and reported): the writer must stop producing.
  bool ownershipLost() const noexcept;
  /// Whether the lock is still being extended.
  bool running() const noexcept;

 private:
  friend class StreamLock;
  explicit Heartbeat(std::shared_ptr<detail::HeartbeatEntry> entry);
  std::shared_ptr<detail::HeartbeatEntry> entry_;
};

/// A held lock on one chat. Move-only. Released (compare-and-delete) on destruction: the release
/// is handed to the Client's I/O thread, so destroying a StreamLock never blocks on the network.
/// A StreamLock may outlive its Client: it then answers AlreadyReleased.
class [[nodiscard]] StreamLock {
 public:
  ~StreamLock();
  /// Moves the lock; the moved-from one releases nothing (it answers AlreadyReleased, its
  /// completions still delivered through the Client, never inside the call).
  StreamLock(StreamLock&& other) noexcept;
  /// Releases this lock (handed to the I/O thread), then takes other's.
  StreamLock& operator=(StreamLock&& other) noexcept;
  StreamLock(const StreamLock&) = delete;
  StreamLock& operator=(const StreamLock&) = delete;

  /// The chat whose lock this is.
  const std::string& chatId() const noexcept { return chatId_; }
  /// The stream that holds it (the lock's value).
  const std::string& streamId() const noexcept { return streamId_; }

  /// Starts extending the lock every heartbeat interval; onLost (optional) is told of a loss.
  /// Thread-safe; returns at once. Without Redis the lock cannot expire and the heartbeat does
  /// nothing. Keep the returned Heartbeat: destroying it stops the heartbeat.
  Heartbeat startHeartbeat(OwnershipLostCallback onLost = {});

  /// Deletes the lock only while it holds our stream id, and removes the pending-map entry.
  /// Thread-safe and idempotent; never throws. Blocks at most redis.commandTimeout (connecting
  /// included); returns at once when already released.
  ReleaseOutcome release() noexcept;
  /// The completion form of release(): returns at once; done is called once with the outcome.
  void release(Completion<ReleaseOutcome> done) noexcept;

 private:
  friend class detail::ClientCore;
  StreamLock(std::shared_ptr<detail::ClientCore> client, std::string chatId, std::string streamId,
             std::chrono::steady_clock::time_point acquiredAt);
  std::shared_ptr<detail::ClientCore> client_;
  std::string chatId_;
  std::string streamId_;
  std::chrono::steady_clock::time_point acquiredAt_;  ///< when the winning SET was sent
};

/// The outcome of an acquire: a held lock; nullopt when another stream holds it (busy); or an
/// Error (Redis failing, timing out, shut down, invalid argument).
using AcquireResult = Result<std::optional<StreamLock>>;

/// The library object: one I/O thread that drives every Redis and PostgreSQL socket, the pending
/// map, the breaker, the heartbeats and the counters of one application. Two Clients share nothing;
/// there is no global state. Every member is thread-safe.
///
/// Each call comes in two forms. The blocking form waits for the outcome (within the bound it
/// documents). The completion form returns at once, never blocking its caller on the network, a
/// lock held by another thread or a connection, and calls `done` exactly once: never inside the
/// call that started it, within the same bound as the blocking form, on Options::executor if
/// set, else on the library's callback thread (never the I/O thread).
///
/// fork(): a child never touches the parent's locks or connections. Destroying a parent's Client
/// in a child (e.g. static destructors at exit() after a failed execvp) sends nothing and joins no
/// thread: it only frees memory. Any other call in a child fails as if the Client were shut down.
/// The parent's Client is unaffected by anything the child does. Create Clients after forking.
class Client {
 public:
  /// Checks every option (Error(InvalidArgument) naming the first bad one, e.g.
  /// "redis.lookupDeadline must be positive") and the URLs. Opens no connection and starts no
  /// thread: the I/O thread starts with the first call that needs it.
  explicit Client(Options options);
  /// shutdown(). Safe from any thread, including inside a completion or an ownership-lost callback.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // --- Reader ----------------------------------------------------------------------------------

  /// The lock owners of a batch of chats. Empty input: verified, no Redis call. Otherwise the whole
  /// batch in one Redis round trip (MGETs pipelined), or unknown with the local owners when Redis
  /// is not configured, failing, or behind an open breaker. Never throws.
  /// Blocks at most redis.lookupDeadline.
  [[nodiscard]] ActiveStreams getActiveChatStreamIds(const std::vector<std::string>& chatIds) noexcept;
  /// The completion form of getActiveChatStreamIds.
  void getActiveChatStreamIds(std::vector<std::string> chatIds, Completion<ActiveStreams> done) noexcept;

  /// Reconciles markers read from the database against the locks (see reconcileMarkers) and, with
  /// options.repair, clears the verified-stale ones in one statement before returning.
  ///
  /// Read the markers from the database BEFORE calling this. Read after the lookup, a stream that
  /// started in between has a marker but a lock the lookup did not see, and repair would clear it.
  ///
  /// Only candidates with a marker are looked up. Never throws; a repair failure is logged, counted
  /// and reported in the result. Blocks at most redis.lookupDeadline, plus with repair
  /// repair.lockTimeout + repair.statementTimeout (connecting included).
  [[nodiscard]] ReconcileResult reconcileChatStreamMarkers(const std::vector<MarkerCandidate>& candidates,
                                                           const ReconcileOptions& options = {}) noexcept;
  /// The completion form of reconcileChatStreamMarkers.
  void reconcileChatStreamMarkers(std::vector<MarkerCandidate> candidates, ReconcileOptions options,
                                  Completion<ReconcileResult> done) noexcept;

  /// Compare-and-clear of all the given markers in ONE statement (protocol::repairSql), writing
  /// only the marker column. When that statement fails on a value that does not convert to its
  /// column's type (SQLSTATE class 22, e.g. an id that is not a UUID), each marker is tried in a
  /// statement of its own, so the others are still cleared (cleared counts them, failed is set).
  /// Never throws; needs PostgreSQL configured (else failed). Blocks at most
  /// repair.lockTimeout + repair.statementTimeout, everything included (pool wait, connect, the
  /// one-time column-type lookup).
  [[nodiscard]] RepairResult repairStaleMarkers(const std::vector<StaleMarker>& markers) noexcept;
  /// The completion form of repairStaleMarkers.
  void repairStaleMarkers(std::vector<StaleMarker> markers, Completion<RepairResult> done) noexcept;

  // --- Writer ----------------------------------------------------------------------------------

  /// `SET key streamId NX EX ttl`, and records the stream in the pending map. nullopt when another
  /// stream holds the lock past waitFor (zero or negative: do not wait; a huge value waits for
  /// ever). Throws Error: InvalidArgument (an empty id), ConnectFailed / ConnectionLost / Timeout /
  /// ServerError when Redis fails, ShutDown. An acquire that fails after its SET may have reached
  /// Redis leaves no lock behind: its own value is compare-and-deleted in the background, on the
  /// same connection right after the SET, as soon as Redis answers again.
  /// Blocks at most waitFor + redis.commandTimeout (connecting included).
  [[nodiscard]] std::optional<StreamLock> acquireStreamLock(const std::string& chatId, const std::string& streamId,
                                                            Milliseconds waitFor = Milliseconds{0});
  /// The completion form of acquireStreamLock; failures are an Error in the result.
  void acquireStreamLock(std::string chatId, std::string streamId, Milliseconds waitFor,
                         Completion<AcquireResult> done) noexcept;

  /// Writer protocol step 2 on the repair table: sets the marker. Returns whether a row changed.
  /// Throws Error on database failure. Blocks at most postgres.acquireTimeout + connectTimeout +
  /// statementTimeout.
  bool writeMarker(const std::string& chatId, const std::string& streamId);
  /// Writer protocol step 4: clears the marker only while it still holds streamId.
  bool clearMarker(const std::string& chatId, const std::string& streamId);
  /// The completion form of writeMarker; a failure is the Error in the result.
  void writeMarker(std::string chatId, std::string streamId, Completion<Result<bool>> done) noexcept;
  /// The completion form of clearMarker; a failure is the Error in the result.
  void clearMarker(std::string chatId, std::string streamId, Completion<Result<bool>> done) noexcept;

  // --- State -----------------------------------------------------------------------------------

  /// Redis as a health check would see it: disabled, or the answer of a PING within the lookup
  /// deadline (unknown at once while the breaker is open). Never throws.
  /// Blocks at most redis.lookupDeadline.
  [[nodiscard]] RedisStatus redisStatus() noexcept;

  /// The process-local pending map. Never blocks beyond a short mutex hold.
  PendingStreams& pendingStreams() noexcept;
  /// The PostgreSQL pool (driven by this Client's I/O thread), or nullptr without a conninfo.
  PgPool* postgres() noexcept;
  /// The monotonic counters. Thread-safe, lock-free.
  [[nodiscard]] Counters counters() const noexcept;
  /// The counters, gauges (locks held, connections) and latency histograms, for any metrics
  /// library to export; see streamlock/metrics.h, which defines Metrics. Thread-safe; never touches
  /// the network and never blocks beyond short mutex holds.
  [[nodiscard]] Metrics metrics() const noexcept;
  /// The read path's circuit breaker now. Thread-safe; a short mutex hold.
  [[nodiscard]] BreakerState breakerState() const noexcept;
  /// The options, validated, with defaults filled in (the logger).
  const Options& options() const noexcept;

  /// Completes every pending call (unknown / failed), stops the heartbeats, releases every lock
  /// the Client still holds (one pipeline, best effort), closes every connection, and joins the
  /// library's threads (the callback thread after it ran what was queued, unless called on it).
  /// Later calls answer unknown / fail with Error(ShutDown) at once (completion forms: on the
  /// executor if set, else inline). Idempotent; safe from any thread and from inside a callback.
  /// Blocks at most redis.commandTimeout (+ the callbacks still queued, when not on the callback
  /// thread).
  void shutdown() noexcept;

 private:
  std::shared_ptr<detail::ClientCore> core_;
};

}  // namespace streamlock
