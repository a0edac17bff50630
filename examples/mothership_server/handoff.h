#pragma once

// A value handed from the library's I/O thread, where the server's completions run, to the HTTP
// thread that waits for it: one futex wait on the HTTP thread and one futex wake on the I/O
// thread per request, and neither when the value comes before the wait (std::condition_variable
// makes a third futex call whenever the woken thread finds the signalling one still inside
// notify_one, seen under strace on about one request in two).
//
// Handoff<T> is owned by a shared_ptr held by both sides, so that the side that is done last frees
// it. Promise<T> is the completions' end: it sets the value once, and a promise dropped without
// having set one (a completion that threw, or that was destroyed uncalled) sets fallback(), so
// that the waiting thread never waits for ever.

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <utility>

namespace mothership {

template <class T>
class Handoff {
 public:
  // Any thread, once.
  void set(T value) {
    value_.emplace(std::move(value));
    if (state_.exchange(kSet, std::memory_order_acq_rel) == kWaiting) futex(FUTEX_WAKE_PRIVATE, 1);
  }

  // One thread: returns the value once it is set.
  T wait() {
    int expected = kEmpty;
    if (state_.compare_exchange_strong(expected, kWaiting, std::memory_order_acq_rel)) {
      do {
        futex(FUTEX_WAIT_PRIVATE, kWaiting);  // returns at once unless the state is still kWaiting
      } while (state_.load(std::memory_order_acquire) != kSet);
    }
    return std::move(*value_);
  }

 private:
  static constexpr int kEmpty = 0, kWaiting = 1, kSet = 2;

  void futex(int operation, int value) {
    ::syscall(SYS_futex, reinterpret_cast<int*>(&state_), operation, value, nullptr, nullptr, 0);
  }

  static_assert(sizeof(std::atomic<int>) == sizeof(int), "the futex word is the atomic itself");
  std::atomic<int> state_{kEmpty};
  std::optional<T> value_;
};

template <class T>
class Promise {
 public:
  Promise(std::shared_ptr<Handoff<T>> handoff, T (*fallback)()) : handoff_(std::move(handoff)), fallback_(fallback) {}
  ~Promise() {
    if (!done_) handoff_->set(fallback_());
  }
  Promise(const Promise&) = delete;
  Promise& operator=(const Promise&) = delete;

  void set(T value) {
    if (done_) return;
    done_ = true;
    handoff_->set(std::move(value));
  }

 private:
  std::shared_ptr<Handoff<T>> handoff_;
  T (*fallback_)();
  bool done_ = false;
};

}  // namespace mothership
