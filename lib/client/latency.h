#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "io/clock.h"
#include "streamlock/metrics.h"

namespace streamlock::detail {

// Durations of one kind of call in fixed buckets, recorded lock-free by any thread and read as a
// cumulative LatencyHistogram (metrics.cpp).
class LatencyRecorder {
 public:
  // Bucket upper bounds in seconds: a lookup's default deadline is 0.25 s, a repair's bound about 1 s.
  static constexpr std::array<double, 13> kUpperBoundsSeconds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                              0.1,    0.25,  0.5,    1.0,   2.5,   5.0};

  void record(Clock::duration elapsed) noexcept;
  LatencyHistogram snapshot() const;

 private:
  std::array<std::atomic<std::uint64_t>, kUpperBoundsSeconds.size() + 1> buckets_{};  // the last: +Inf
  std::atomic<std::uint64_t> sumNanoseconds_{0};
};

// Records the time from its construction to its destruction: put one at the top of a call.
class LatencyTimer {
 public:
  explicit LatencyTimer(LatencyRecorder& recorder) noexcept : recorder_(recorder), start_(Clock::now()) {}
  ~LatencyTimer() { recorder_.record(Clock::now() - start_); }
  LatencyTimer(const LatencyTimer&) = delete;
  LatencyTimer& operator=(const LatencyTimer&) = delete;

 private:
  LatencyRecorder& recorder_;
  Deadline start_;
};

}  // namespace streamlock::detail
