#include "http/task_queue.h"

#include <exception>
#include <utility>

namespace mothership {
namespace {

thread_local bool t_refusing = false;

void run(const std::function<void()>& fn) {
  try {
    fn();
  } catch (...) {
    // A task that throws (std::bad_alloc) is dropped; the queue goes on.
  }
}

}  // namespace

BoundedTaskQueue::BoundedTaskQueue(std::size_t threads, std::size_t maxQueued, std::atomic<std::size_t>& waiting)
    : maxThreads_(threads), maxQueued_(maxQueued), waiting_(waiting) {
  threads_.reserve(threads);
}

BoundedTaskQueue::~BoundedTaskQueue() { shutdown(); }

void BoundedTaskQueue::enqueue(std::function<void()> fn) {
  std::function<void()> refused;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || jobs_.size() >= maxQueued_) {
      refused = std::move(fn);
    } else {
      jobs_.push_back(std::move(fn));
      if (!idle_.empty()) {
        Idle* last = idle_.back();  // the warmest one
        idle_.pop_back();
        last->woken = true;
        ++handedOff_;
        last->wake.notify_one();
      } else if (threads_.size() < maxThreads_) {
        ++handedOff_;  // the new thread takes a job first
        try {
          threads_.emplace_back([this] { work(); });
        } catch (const std::exception&) {
          // Out of threads or memory: the task waits for a busy thread, or is refused when
          // there is none.
          --handedOff_;
          if (threads_.empty()) {
            refused = std::move(jobs_.back());
            jobs_.pop_back();
          }
        }
      }
      publish();
    }
  }
  if (!refused) return;
  t_refusing = true;
  run(refused);
  t_refusing = false;
}

void BoundedTaskQueue::shutdown() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    for (Idle* idle : idle_) {
      idle->woken = true;
      ++handedOff_;
      idle->wake.notify_one();
    }
    idle_.clear();
  }
  // No thread starts any more: the queued tasks run first.
  for (auto& thread : threads_) thread.join();
}

bool BoundedTaskQueue::refusing() noexcept { return t_refusing; }

// The tasks that wait for a thread: those queued beyond the threads already on their way to one.
void BoundedTaskQueue::publish() {
  waiting_.store(jobs_.size() > handedOff_ ? jobs_.size() - handedOff_ : 0);
}

void BoundedTaskQueue::work() {
  Idle self;
  std::unique_lock<std::mutex> lock(mutex_);
  bool handedOff = true;  // started for a job
  for (;;) {
    if (handedOff) {
      --handedOff_;
      handedOff = false;
    }
    if (!jobs_.empty()) {
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      publish();
      lock.unlock();
      run(fn);
      fn = nullptr;  // whatever it holds is released outside the lock
      lock.lock();
      continue;
    }
    if (stopping_) return;
    self.woken = false;
    idle_.push_back(&self);
    publish();
    self.wake.wait(lock, [&self] { return self.woken; });
    handedOff = true;
  }
}

}  // namespace mothership
