#include "http/task_queue.h"

#include <utility>

namespace mothership {
namespace {

thread_local bool t_refusing = false;

void run(const std::function<void()>& fn) {
  try {
    fn();
  } catch (...) {
    // httplib's connection task throws only std::bad_alloc; the queue goes on.
  }
}

}  // namespace

BoundedTaskQueue::BoundedTaskQueue(std::size_t threads, std::size_t maxQueued, std::atomic<std::size_t>& waiting)
    : maxQueued_(maxQueued), waiting_(waiting) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

BoundedTaskQueue::~BoundedTaskQueue() { shutdown(); }

void BoundedTaskQueue::enqueue(std::function<void()> fn) {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (jobs_.size() < maxQueued_) {
      jobs_.push_back(std::move(fn));
      publish();
      ready_.notify_one();
      return;
    }
  }
  t_refusing = true;
  run(fn);
  t_refusing = false;
}

void BoundedTaskQueue::shutdown() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& thread : threads_) thread.join();  // the queued connections are served (and closed) first
}

bool BoundedTaskQueue::refusing() noexcept { return t_refusing; }

// A connection queued while a thread is idle is taken at once: only those beyond the idle threads
// wait. (Counting every queued one would see pressure in the instant between an accept and a free
// thread taking the connection, and make idle keep-alive connections give their thread up for
// nothing.)
void BoundedTaskQueue::publish() { waiting_.store(jobs_.size() > idle_ ? jobs_.size() - idle_ : 0); }

void BoundedTaskQueue::work() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ++idle_;
      publish();
      ready_.wait(lock, [this] { return !jobs_.empty() || stopping_; });
      --idle_;
      if (jobs_.empty()) return;
      fn = std::move(jobs_.front());
      jobs_.pop_front();
      publish();
    }
    run(fn);
  }
}

}  // namespace mothership
