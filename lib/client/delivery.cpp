#include "client/delivery.h"

#include <atomic>
#include <exception>
#include <string>
#include <system_error>
#include <utility>

namespace streamlock::detail {
namespace {

void logSafely(const Logger& logger, LogLevel level, const std::string& message) noexcept {
  try {
    if (logger) logger(level, message);
  } catch (...) {
  }
}

}  // namespace

Delivery::Delivery(Executor executor, Logger logger)
    : executor_(std::move(executor)), logger_(std::move(logger)), queue_(std::make_shared<Queue>()) {}

Delivery::~Delivery() { stop(); }

bool Delivery::post(std::function<void()>&& task) noexcept {
  if (!executor_) return queueOnThread(task);
  {
    // The host's executor outlives the Client's shutdown (completions after it go there too), but
    // not a fork(): a child's copy of a parent's Client gives nothing to it.
    std::lock_guard<std::mutex> guard(queue_->mutex);
    if (queue_->forked) return false;
  }
  // The executor may throw after it kept a copy: whichever runs first runs the task, once.
  struct Once {
    std::function<void()> task;
    std::atomic<bool> taken{false};
    void operator()() {
      if (!taken.exchange(true)) task();
    }
  };
  std::shared_ptr<Once> once;
  try {
    once = std::make_shared<Once>();
    once->task = std::move(task);
    executor_([once] { (*once)(); });
    return true;
  } catch (const std::exception& e) {
    logSafely(logger_, LogLevel::Error, std::string("the executor threw; the task runs on the callback thread: ") + e.what());
  } catch (...) {
    logSafely(logger_, LogLevel::Error, "the executor threw; the task runs on the callback thread");
  }
  std::function<void()> fallback;
  if (once) {
    fallback = [once] { (*once)(); };
  } else {
    fallback = std::move(task);
  }
  if (queueOnThread(fallback)) return true;
  // Shut down: no callback thread any more. Run it here rather than lose it.
  try {
    fallback();
  } catch (...) {
    logSafely(logger_, LogLevel::Error, "a completion or callback threw");
  }
  return true;
}

bool Delivery::queueOnThread(std::function<void()>& task) noexcept {
  try {
    std::unique_lock<std::mutex> guard(queue_->mutex);
    if (queue_->stopping) return false;
    queue_->tasks.push_back(std::move(task));
    guard.unlock();
    {
      std::lock_guard<std::mutex> threadGuard(threadMutex_);
      if (!thread_.joinable()) thread_ = std::thread(run, queue_, logger_);
    }
    queue_->ready.notify_one();
    return true;
  } catch (const std::exception& e) {
    // Out of memory or threads: nothing can run the task later; run it here rather than lose it.
    logSafely(logger_, LogLevel::Error, std::string("cannot queue a callback, running it inline: ") + e.what());
    if (task) {
      try {
        task();
      } catch (...) {
      }
    }
    return true;
  }
}

void Delivery::run(std::shared_ptr<Queue> queue, Logger logger) {
  {
    std::lock_guard<std::mutex> guard(queue->mutex);
    queue->thread = std::this_thread::get_id();
  }
  std::unique_lock<std::mutex> lock(queue->mutex);
  for (;;) {
    queue->ready.wait(lock, [&] { return queue->stopping || !queue->tasks.empty(); });
    if (queue->tasks.empty()) return;  // stopping, and everything ran
    std::function<void()> task = std::move(queue->tasks.front());
    queue->tasks.pop_front();
    lock.unlock();
    try {
      task();
    } catch (const std::exception& e) {
      logSafely(logger, LogLevel::Error, std::string("a completion or callback threw: ") + e.what());
    } catch (...) {
      logSafely(logger, LogLevel::Error, "a completion or callback threw");
    }
    task = nullptr;  // whatever it captured is released outside the lock
    lock.lock();
  }
}

void Delivery::stop() noexcept {
  {
    std::lock_guard<std::mutex> guard(queue_->mutex);
    queue_->stopping = true;
  }
  queue_->ready.notify_all();
  std::thread thread;
  {
    std::lock_guard<std::mutex> guard(threadMutex_);
    thread = std::move(thread_);
  }
  if (!thread.joinable()) return;
  if (thread.get_id() == std::this_thread::get_id()) {
    thread.detach();  // it drains the queue and ends once the current callback returns
  } else {
    thread.join();
  }
}

bool Delivery::onCallbackThread() const noexcept {
  std::lock_guard<std::mutex> guard(queue_->mutex);
  return queue_->thread == std::this_thread::get_id();
}

std::mutex& Delivery::queueMutex() noexcept { return queue_->mutex; }

void Delivery::abandonAfterFork() noexcept {
  std::lock_guard<std::mutex> guard(threadMutex_);
  if (thread_.joinable()) thread_.detach();
  queue_->stopping = true;
  queue_->forked = true;
  queue_->tasks.clear();
}

}  // namespace streamlock::detail
