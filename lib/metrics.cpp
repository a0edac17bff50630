// Client::metrics(): the counters, the gauges read from the pools, the breaker and the held locks,
// and the latency histograms.
#include "streamlock/metrics.h"

#include <algorithm>
#include <chrono>

#include "client_state.h"
#include "latency.h"

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

namespace {

template <typename Stats>
PoolMetrics poolMetrics(const Stats& stats, std::size_t configuredSize) {
  PoolMetrics out;
  out.open = stats.open;
  out.idle = std::min(stats.idle, stats.open);
  out.inUse = out.open - out.idle;
  out.capacity = std::max<std::size_t>(configuredSize, 1);  // as the pools read a size of 0
  return out;
}

}  // namespace

std::size_t ClientState::locksHeld() {
  std::lock_guard<std::mutex> guard(heldMutex_);
  return held_.size();
}

}  // namespace detail

Metrics Client::metrics() const noexcept {
  Metrics out;
  detail::ClientState& state = *state_;
  out.counters = state.counters_.snapshot();
  try {
    out.locksHeld = state.locksHeld();
    out.breaker = state.breaker_.state(detail::Clock::now());
    const auto transitions = state.breaker_.transitions();
    out.breakerTransitions = {transitions.toOpen, transitions.toHalfOpen, transitions.toClosed};
    if (state.redis_) out.redisPool = detail::poolMetrics(state.redis_->stats(), state.options_.redis.poolSize);
    if (state.postgres_) {
      out.postgresPool = detail::poolMetrics(state.postgres_->stats(), state.options_.postgres.poolSize);
    }
    if (state.repairPostgres_) {
      out.repairPool = detail::poolMetrics(state.repairPostgres_->stats(), state.options_.repair.poolSize);
    }
    out.lookupLatency = state.lookupLatency_.snapshot();
    out.repairLatency = state.repairLatency_.snapshot();
  } catch (...) {
    // Only allocation can fail here (the histograms' vectors): the fields read so far stand.
  }
  return out;
}

}  // namespace streamlock
