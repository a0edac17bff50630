#pragma once

// The bounded task queue: httplib's accept loop hands each accepted connection to it, a fixed set
// of threads serves them, and past maxQueued waiting connections the next one is refused (503 and
// closed) instead of queueing without limit as httplib's own ThreadPool does.
// Earns: the hostile tests "400 idle connections against 64 threads" and "clients that stall or
// trickle" (the queue length is the pressure that makes idle and slow connections give their
// thread up, guarded_stream.h); and a flood of connects costs a bounded queue, not memory.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <httplib.h>

namespace mothership {

class BoundedTaskQueue final : public httplib::TaskQueue {
 public:
  // waiting: where the queue publishes how many connections wait for a thread that is not free
  // (queued connections beyond the idle threads about to take them), the pressure that makes idle
  // and slow connections give their thread up.
  BoundedTaskQueue(std::size_t threads, std::size_t maxQueued, std::atomic<std::size_t>& waiting);
  ~BoundedTaskQueue() override;  // shutdown()

  // Queues fn; when the queue is full, runs it at once on the calling (accepting) thread with
  // refusing() true, so that it answers 503 and closes.
  void enqueue(std::function<void()> fn) override;

  // Serves what is queued (each connection then closes), and joins the threads. Idempotent.
  void shutdown() override;

  // Whether this thread is running a task that the queue refuses.
  static bool refusing() noexcept;

 private:
  void work();
  void publish();  // with mutex_ held

  const std::size_t maxQueued_;
  std::atomic<std::size_t>& waiting_;
  std::size_t idle_ = 0;  // threads waiting for a connection
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mothership
