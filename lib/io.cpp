#include "io.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

namespace streamlock::detail {

bool waitForFd(int fd, short events, Deadline deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    // +1: poll rounds down, and waking a millisecond early would report a timeout too soon.
    int n = ::poll(&p, 1, static_cast<int>(left) + 1);
    if (n > 0) return true;  // ready, or an error/hang-up that the next read or write reports
    if (n < 0 && errno != EINTR) return true;
  }
}

bool idleSocketIsDead(int fd) {
  pollfd p{fd, POLLIN, 0};
  int n = ::poll(&p, 1, 0);
  return n != 0;  // readable (EOF or stray bytes), an error, or poll failed
}

}  // namespace streamlock::detail
