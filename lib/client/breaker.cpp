#include "client/breaker.h"

namespace streamlock::detail {

Breaker::Admission Breaker::admit(Deadline now) {
  if (options_.failureThreshold == 0) return Admission::Ask;
  std::lock_guard<std::mutex> guard(mutex_);
  if (!open_) return Admission::Ask;
  if (probing_ || now < openUntil_) return Admission::Refuse;
  probing_ = true;
  ++transitions_.toHalfOpen;
  return Admission::Probe;
}

void Breaker::succeeded(Admission admission) {
  if (options_.failureThreshold == 0) return;
  std::lock_guard<std::mutex> guard(mutex_);
  consecutiveFailures_ = 0;
  if (admission == Admission::Probe || open_) {
    if (open_) ++transitions_.toClosed;
    open_ = false;
    probing_ = false;
  }
}

bool Breaker::failed(Admission admission, Deadline now) {
  if (options_.failureThreshold == 0) return false;
  std::lock_guard<std::mutex> guard(mutex_);
  if (admission == Admission::Probe) {
    probing_ = false;
    openUntil_ = now + options_.coolDown;
    ++transitions_.toOpen;  // half-open -> open
    return false;  // it was open already
  }
  if (open_) return false;  // a lookup admitted before the breaker opened
  if (++consecutiveFailures_ < options_.failureThreshold) return false;
  open_ = true;
  openUntil_ = now + options_.coolDown;
  ++transitions_.toOpen;
  return true;
}

void Breaker::inconclusive(Admission admission) {
  if (admission != Admission::Probe) return;
  std::lock_guard<std::mutex> guard(mutex_);
  probing_ = false;
}

Breaker::Transitions Breaker::transitions() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return transitions_;
}

BreakerState Breaker::state(Deadline now) const {
  std::lock_guard<std::mutex> guard(mutex_);
  if (!open_) return BreakerState::Closed;
  if (probing_ || now >= openUntil_) return BreakerState::HalfOpen;
  return BreakerState::Open;
}

}  // namespace streamlock::detail
