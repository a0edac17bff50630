#include "http/task_queue.h"

#include <exception>
#include <utility>

namespace mothership {

BoundedTaskQueue::BoundedTaskQueue(std::size_t threads, std::size_t maxQueued)
    : maxThreads_(threads), maxQueued_(maxQueued) {
  threads_.reserve(threads);
}

BoundedTaskQueue::~BoundedTaskQueue() { shutdown(); }

bool BoundedTaskQueue::tryEnqueue(std::function<void()> task) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || jobs_.size() >= maxQueued_) return false;
  jobs_.push_back(std::move(task));
  if (idle_ > jobs_.size() - 1) {
    wake_.notify_one();  // an idle thread not yet claimed by an earlier job
  } else if (threads_.size() < maxThreads_) {
    try {
      threads_.emplace_back([this] { work(); });
    } catch (const std::exception&) {
      // Out of threads or memory: a running thread takes it later, or, with none, it is refused.
      if (threads_.empty()) {
        jobs_.pop_back();
        return false;
      }
    }
  }
  return true;
}

void BoundedTaskQueue::shutdown() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  // No thread starts any more: the queued tasks run first.
  for (auto& thread : threads_) thread.join();
}

void BoundedTaskQueue::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (!jobs_.empty()) {
      std::function<void()> task = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      try {
        task();
      } catch (...) {
        // A task that throws (std::bad_alloc) is dropped; the queue goes on.
      }
      task = nullptr;  // whatever it holds is released outside the lock
      lock.lock();
      continue;
    }
    if (stopping_) return;
    ++idle_;
    wake_.wait(lock);
    --idle_;
  }
}

}  // namespace mothership
