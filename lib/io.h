#pragma once

#include <chrono>

namespace streamlock::detail {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline deadlineIn(std::chrono::milliseconds timeout) { return Clock::now() + timeout; }

// Waits until fd is ready for events (POLLIN/POLLOUT) or the deadline passes.
// Returns false on timeout; throws nothing. EINTR is retried.
bool waitForFd(int fd, short events, Deadline deadline);

// Whether an idle socket has data or EOF pending, i.e. the peer closed it or sent something
// unexpected: either way the connection must not be reused.
bool idleSocketIsDead(int fd);

}  // namespace streamlock::detail
