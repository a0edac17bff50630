#include "metrics.h"

#include <cstddef>
#include <utility>

#include <fmt/format.h>

namespace mothership {
namespace {

void counter(std::string& out, const char* name, const char* help, std::uint64_t value) {
  out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, value);
}

void gauge(std::string& out, const char* name, const char* help, std::size_t value) {
  out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, value);
}

// A cumulative histogram as the library reports it.
void histogram(std::string& out, const char* name, const char* help, const streamlock::LatencyHistogram& h) {
  out += fmt::format("# HELP {0} {1}\n# TYPE {0} histogram\n", name, help);
  for (std::size_t i = 0; i < h.upperBoundsSeconds.size() && i < h.counts.size(); ++i) {
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.upperBoundsSeconds[i], h.counts[i]);
  }
  out += fmt::format("{0}_bucket{{le=\"+Inf\"}} {1}\n{0}_sum {2}\n{0}_count {1}\n", name, h.count, h.sumSeconds);
}

// The connections of the library's pools, by pool and state.
void pools(std::string& out, const streamlock::Metrics& m) {
  const std::pair<const char*, const streamlock::PoolMetrics*> all[] = {
      {"redis", &m.redisPool}, {"postgres", &m.postgresPool}, {"repair", &m.repairPool}};
  out += "# HELP streamlock_pool_connections Open connections of the library's pools, in use or idle.\n"
         "# TYPE streamlock_pool_connections gauge\n";
  for (const auto& [pool, metrics] : all) {
    out += fmt::format("streamlock_pool_connections{{pool=\"{}\",state=\"in_use\"}} {}\n", pool, metrics->inUse);
    out += fmt::format("streamlock_pool_connections{{pool=\"{}\",state=\"idle\"}} {}\n", pool, metrics->idle);
  }
  out += "# HELP streamlock_pool_max_connections Configured size of the library's pools (0: not configured).\n"
         "# TYPE streamlock_pool_max_connections gauge\n";
  for (const auto& [pool, metrics] : all) {
    out += fmt::format("streamlock_pool_max_connections{{pool=\"{}\"}} {}\n", pool, metrics->capacity);
  }
}

}  // namespace

void Metrics::observe(const std::string& route, int status, double seconds) {
  const std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, status}];
  auto& histogram = latency_[route];
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++histogram.buckets[i];
      break;
    }
  }
  ++histogram.count;
  histogram.sum += seconds;
}

std::string Metrics::render(const streamlock::Metrics& library) const {
  const streamlock::Counters& c = library.counters;
  std::string out;
  out += "# HELP streamlock_lookups_total Lock lookups by outcome.\n# TYPE streamlock_lookups_total counter\n";
  out += fmt::format("streamlock_lookups_total{{status=\"verified\"}} {}\n", c.lookupsVerified);
  out += fmt::format("streamlock_lookups_total{{status=\"unknown\"}} {}\n", c.lookupsUnknown);
  counter(out, "streamlock_lookup_round_trips_total", "Redis round trips of lock lookups (one pipeline each).",
          c.lookupRoundTrips);
  counter(out, "streamlock_redis_errors_total", "Failed Redis calls, timeouts included.", c.redisErrors);
  counter(out, "streamlock_redis_timeouts_total", "Redis calls that hit their deadline.", c.redisTimeouts);
  counter(out, "streamlock_breaker_opened_total", "Times the Redis circuit breaker opened.", c.breakerOpened);
  counter(out, "streamlock_breaker_short_circuits_total", "Lookups answered unknown by an open breaker.",
          c.breakerShortCircuits);
  counter(out, "streamlock_markers_repaired_total", "Stale markers cleared in the database.", c.markersRepaired);
  counter(out, "streamlock_repair_failures_total", "Repair statements that failed.", c.repairFailures);
  counter(out, "streamlock_locks_acquired_total", "Stream locks acquired.", c.locksAcquired);
  counter(out, "streamlock_locks_released_total", "Stream locks released by their owner.", c.locksReleased);
  counter(out, "streamlock_heartbeats_extended_total", "Lock TTL extensions.", c.heartbeatsExtended);
  counter(out, "streamlock_heartbeats_failed_total", "Lock extensions that errored.", c.heartbeatsFailed);
  counter(out, "streamlock_heartbeats_lost_total", "Lock ownership losses.", c.heartbeatsLost);

  out += "# HELP streamlock_breaker_state 1 for the Redis circuit breaker's current state.\n"
         "# TYPE streamlock_breaker_state gauge\n";
  for (const auto state : {streamlock::BreakerState::Closed, streamlock::BreakerState::Open,
                           streamlock::BreakerState::HalfOpen}) {
    out += fmt::format("streamlock_breaker_state{{state=\"{}\"}} {}\n", streamlock::toString(state),
                       state == library.breaker ? 1 : 0);
  }
  const auto& transitions = library.breakerTransitions;
  out += "# HELP streamlock_breaker_transitions_total Changes of the Redis circuit breaker's state, by new state.\n"
         "# TYPE streamlock_breaker_transitions_total counter\n";
  out += fmt::format("streamlock_breaker_transitions_total{{to=\"open\"}} {}\n", transitions.toOpen);
  out += fmt::format("streamlock_breaker_transitions_total{{to=\"half-open\"}} {}\n", transitions.toHalfOpen);
  out += fmt::format("streamlock_breaker_transitions_total{{to=\"closed\"}} {}\n", transitions.toClosed);

  gauge(out, "streamlock_locks_held", "Stream locks this process holds now.", library.locksHeld);
  pools(out, library);
  histogram(out, "streamlock_lookup_duration_seconds", "Time of lock lookups, verified or unknown.",
            library.lookupLatency);
  histogram(out, "streamlock_repair_duration_seconds", "Time of repair statements, succeeded or failed.",
            library.repairLatency);

  const std::lock_guard<std::mutex> lock(mutex_);
  out += "# HELP mothership_http_requests_total HTTP requests by route template and status.\n"
         "# TYPE mothership_http_requests_total counter\n";
  for (const auto& [key, count] : requests_) {
    out += fmt::format("mothership_http_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", key.first,
                       key.second, count);
  }
  out += "# HELP mothership_http_request_duration_seconds Time to answer a request, by route template.\n"
         "# TYPE mothership_http_request_duration_seconds histogram\n";
  for (const auto& [route, histogram] : latency_) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kBuckets.size(); ++i) {
      cumulative += histogram.buckets[i];
      out += fmt::format("mothership_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", route,
                         kBuckets[i], cumulative);
    }
    out += fmt::format("mothership_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", route,
                       histogram.count);
    out += fmt::format("mothership_http_request_duration_seconds_sum{{route=\"{}\"}} {}\n", route, histogram.sum);
    out += fmt::format("mothership_http_request_duration_seconds_count{{route=\"{}\"}} {}\n", route,
                       histogram.count);
  }
  return out;
}

}  // namespace mothership
