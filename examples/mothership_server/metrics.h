#pragma once

// Request counters and latency histograms by route template, rendered with the library's metrics
// (counters, gauges, latency histograms: streamlock::Client::metrics()) in the Prometheus text
// exposition format.

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include <streamlock/metrics.h>

namespace mothership {

class Metrics {
 public:
  // Thread-safe. route is a template ("/api/mothership/chats/{chatId}"), never a raw path.
  void observe(const std::string& route, int status, double seconds);

  // Thread-safe.
  std::string render(const streamlock::Metrics& library) const;

 private:
  static constexpr std::array<double, 12> kBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,   0.25,   0.5,   1.0,  2.5,   5.0};
  struct Histogram {
    std::array<std::uint64_t, kBuckets.size()> buckets{};  // cumulative counts are computed on render
    std::uint64_t count = 0;
    double sum = 0;
  };

  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;  // (route, status) -> count
  std::map<std::string, Histogram> latency_;                        // route -> histogram
};

}  // namespace mothership
