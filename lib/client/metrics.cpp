// Client::metrics(): the counters, the gauges of the connections, the breaker and the held locks,
// and the latency histograms.
#include "streamlock/metrics.h"

#include <algorithm>
#include <chrono>

#include "client/core.h"
#include "pg/access.h"

namespace streamlock {
namespace detail {

void LatencyRecorder::record(Clock::duration elapsed) noexcept {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(kUpperBoundsSeconds.begin(), kUpperBoundsSeconds.end(), seconds) - kUpperBoundsSeconds.begin());
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  const auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
  sumNanoseconds_.fetch_add(static_cast<std::uint64_t>(std::max<decltype(nanoseconds)>(nanoseconds, 0)),
                            std::memory_order_relaxed);
}

LatencyHistogram LatencyRecorder::snapshot() const {
  LatencyHistogram out;
  out.upperBoundsSeconds.assign(kUpperBoundsSeconds.begin(), kUpperBoundsSeconds.end());
  out.counts.reserve(kUpperBoundsSeconds.size());
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kUpperBoundsSeconds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out.counts.push_back(cumulative);
  }
  // The count is the +Inf bucket, so that it is never below a finite one in a snapshot taken while
  // calls complete (the sum may be a call ahead or behind).
  out.count = cumulative + buckets_.back().load(std::memory_order_relaxed);
  out.sumSeconds = static_cast<double>(sumNanoseconds_.load(std::memory_order_relaxed)) / 1e9;
  return out;
}

std::size_t ClientCore::locksHeld() {
  std::lock_guard<std::mutex> guard(heldMutex_);
  return held_.size();
}

namespace {

PoolMetrics pgPoolMetrics(PgPool& pool) {
  const PgPool::Stats stats = pool.stats();
  PoolMetrics out;
  out.open = stats.open;
  out.idle = std::min(stats.idle, stats.open);
  out.inUse = out.open - out.idle;
  out.capacity = stats.capacity;
  return out;
}

}  // namespace
}  // namespace detail

Metrics Client::metrics() const noexcept {
  Metrics out;
  detail::ClientCore& core = *core_;
  out.counters = core.counters_.snapshot();
  try {
    out.locksHeld = core.locksHeld();
    out.breaker = core.breaker_.state(detail::Clock::now());
    const auto transitions = core.breaker_.transitions();
    out.breakerTransitions = {transitions.toOpen, transitions.toHalfOpen, transitions.toClosed};
    if (core.redisUrl_) {
      // One connection per Redis server (per master of a cluster), shared by every caller.
      out.redisPool.open = core.redisGauges_->open.load();
      out.redisPool.inUse = std::min(core.redisGauges_->busy.load(), out.redisPool.open);
      out.redisPool.idle = out.redisPool.open - out.redisPool.inUse;
      out.redisPool.capacity = std::max<std::size_t>(out.redisPool.open, 1);
    }
    if (core.postgres_) out.postgresPool = detail::pgPoolMetrics(*core.postgres_);
    if (core.repairPostgres_) out.repairPool = detail::pgPoolMetrics(*core.repairPostgres_);
    out.lookupLatency = core.lookupLatency_.snapshot();
    out.repairLatency = core.repairLatency_.snapshot();
  } catch (...) {
    // Only allocation can fail here (the histograms' vectors): the fields read so far stand.
  }
  return out;
}

}  // namespace streamlock
