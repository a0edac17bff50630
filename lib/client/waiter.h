#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

namespace streamlock::detail {

// How a blocking call waits for its completion form: the completion (run directly on the I/O
// thread, never through the executor, so that a blocking call made on the executor's own thread
// cannot deadlock) hands the value over; the caller waits for it. Shared, so that a completion
// that runs after a caller stopped waiting touches nothing freed.
template <typename T>
class Waiter {
 public:
  static std::shared_ptr<Waiter> make() { return std::make_shared<Waiter>(); }

  void set(T value) {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      value_.emplace(std::move(value));
    }
    ready_.notify_one();
  }

  // Waits for the value. Every operation completes by its own deadline (and at shutdown), so this
  // wait ends; it has no timeout of its own.
  T wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return value_.has_value(); });
    return std::move(*value_);
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::optional<T> value_;
};

}  // namespace streamlock::detail
