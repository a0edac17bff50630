#pragma once

/// @file
/// A snapshot of a Client's metrics, as plain values that any metrics library can export
/// (Prometheus, OpenTelemetry, statsd...). streamlock itself exports nothing.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "streamlock/client.h"

namespace streamlock {

/// Durations of one kind of call, in the cumulative form of a Prometheus histogram.
struct LatencyHistogram {
  /// Bucket upper bounds in seconds, ascending. The last bucket, +Inf, is implied: its count is
  /// `count`.
  std::vector<double> upperBoundsSeconds;
  /// `counts[i]`: calls that took at most `upperBoundsSeconds[i]` (cumulative, so non-decreasing).
  std::vector<std::uint64_t> counts;
  /// Calls observed since the Client was created.
  std::uint64_t count = 0;
  /// Their total duration, in seconds.
  double sumSeconds = 0;
};

/// The connections of one pool at the moment of the snapshot.
struct PoolMetrics {
  std::size_t open = 0;      ///< connections that exist (in use, idle, or being opened)
  std::size_t inUse = 0;     ///< leased to a call, or being opened for one (`open - idle`)
  std::size_t idle = 0;      ///< open and waiting to be leased
  std::size_t capacity = 0;  ///< the most that may be open at once (the configured pool size)
};

/// Times the Redis circuit breaker changed state since the Client was created.
struct BreakerTransitions {
  /// To open: after `failureThreshold` consecutive failed lookups, and again after each failed
  /// probe (Counters::breakerOpened counts the first kind only).
  std::uint64_t toOpen = 0;
  /// To half-open: a lookup admitted as the probe once a cool-down was over.
  std::uint64_t toHalfOpen = 0;
  /// To closed: a successful probe (or a success that ended an open period).
  std::uint64_t toClosed = 0;
};

/// Everything Client::metrics() reports: the counters, gauges of the present moment, and
/// latency histograms. Counters and histograms only grow; gauges go up and down.
struct Metrics {
  /// The monotonic counters, as Client::counters() returns them.
  Counters counters;
  /// Stream locks this Client holds now (acquired and not yet released), Redis or process-local.
  std::size_t locksHeld = 0;
  /// The breaker's state now.
  BreakerState breaker = BreakerState::Closed;
  /// State changes of the breaker.
  BreakerTransitions breakerTransitions;
  /// The Redis connections: one per server (per master of a cluster), shared and pipelined by every
  /// caller, so none is ever "leased": inUse counts those with commands in flight, capacity the
  /// connections the topology has (at least 1). All zero when Redis is not configured.
  PoolMetrics redisPool;
  /// The main PostgreSQL pool (markers, Client::postgres()); all zero without PostgreSQL.
  PoolMetrics postgresPool;
  /// The PostgreSQL pool of the repairs; all zero without PostgreSQL.
  PoolMetrics repairPool;
  /// Lock lookups (getActiveChatStreamIds, and the lookup of reconcileChatStreamMarkers), from the
  /// call to its answer, verified or unknown. Includes empty lookups, which ask nothing.
  LatencyHistogram lookupLatency;
  /// Repair statements (reconcile with repair, repairStaleMarkers) that had markers to clear,
  /// succeeded or failed, pool wait included.
  LatencyHistogram repairLatency;
};

}  // namespace streamlock
