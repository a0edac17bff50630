#pragma once

// Ends the process with a message when the scope it guards has not ended within its bound: a
// library that hangs (a deadlock, a wait without deadline) fails the test case at once instead of
// holding ctest until its timeout. Declare it first in a test case.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace streamlock::test {

class Watchdog {
 public:
  Watchdog(std::string what, std::chrono::seconds bound)
      : thread_([this, what = std::move(what), bound] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (disarmed_.wait_for(lock, bound, [this] { return done_; })) return;
          std::fprintf(stderr, "watchdog: \"%s\" did not end within %lld s: the library (or a server) hangs\n",
                       what.c_str(), static_cast<long long>(bound.count()));
          std::fflush(stderr);
          std::_Exit(3);
        }) {}
  ~Watchdog() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    disarmed_.notify_one();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::mutex mutex_;
  std::condition_variable disarmed_;
  bool done_ = false;
  std::thread thread_;  // last: it starts once the members it uses exist
};

}  // namespace streamlock::test
