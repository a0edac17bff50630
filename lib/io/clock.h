#pragma once

#include <chrono>
#include <limits>

namespace streamlock::detail {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// from + d, saturating at the ends of the clock instead of overflowing: a huge wait means "for
// ever", a negative one "now".
template <typename Rep, typename Period>
Deadline saturatingAdd(Deadline from, std::chrono::duration<Rep, Period> d) noexcept {
  using Ticks = Clock::duration;
  constexpr auto kMaxTicks = std::chrono::duration_cast<std::chrono::duration<long double, Period>>(Ticks::max());
  if (d <= std::chrono::duration<Rep, Period>::zero()) return from;
  // Compare in long double so that a duration of another unit cannot overflow the conversion.
  if (std::chrono::duration<long double, Period>(d) >= kMaxTicks) return Deadline::max();
  const Ticks ticks = std::chrono::duration_cast<Ticks>(d);
  if (from.time_since_epoch() > Ticks::max() - ticks) return Deadline::max();
  return from + ticks;
}

template <typename Rep, typename Period>
Deadline deadlineIn(std::chrono::duration<Rep, Period> d) noexcept {
  return saturatingAdd(Clock::now(), d);
}

}  // namespace streamlock::detail
