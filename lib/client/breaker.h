#pragma once

#include <cstdint>
#include <mutex>

#include "io/clock.h"
#include "streamlock/client.h"
#include "streamlock/options.h"

namespace streamlock::detail {

// The Redis circuit breaker. Closed: every lookup asks Redis. After failureThreshold consecutive
// failures it opens: lookups answer unknown at once for coolDown. Then one lookup probes
// (half-open) while the others still answer unknown; its success closes the breaker, its failure
// opens it again. Thread-safe.
class Breaker {
 public:
  enum class Admission { Ask, Probe, Refuse };

  explicit Breaker(const BreakerOptions& options) : options_(options) {}

  Admission admit(Deadline now);
  void succeeded(Admission admission);
  // Returns true when this failure opened the breaker.
  bool failed(Admission admission, Deadline now);
  // The call failed for a reason that says nothing about Redis (no pooled connection was free):
  // it does not count, and a probe slot it held is handed to the next caller.
  void inconclusive(Admission admission);
  BreakerState state(Deadline now) const;

  // State changes since construction, for Client::metrics().
  struct Transitions {
    std::uint64_t toOpen = 0;
    std::uint64_t toHalfOpen = 0;
    std::uint64_t toClosed = 0;
  };
  Transitions transitions() const;

 private:
  const BreakerOptions options_;
  mutable std::mutex mutex_;
  unsigned consecutiveFailures_ = 0;
  bool open_ = false;
  bool probing_ = false;
  Deadline openUntil_{};
  Transitions transitions_;
};

}  // namespace streamlock::detail
