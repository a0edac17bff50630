#pragma once

// The bounded task queue: httplib's accept loop hands each accepted connection to it, at most
// `threads` threads serve them, and past maxQueued waiting connections the next one is refused
// (503 and closed) instead of queueing without limit as httplib's own ThreadPool does.
// Threads start when a connection finds none free (so a server that never sees more than 32
// connections at once has about 32), and the one that went idle last takes the next connection:
// the threads in use stay few and warm, and the others never touch their stacks.
// Earns: the hostile tests "400 idle connections against 64 threads" and "clients that stall or
// trickle" (the queue length is the pressure that makes idle and slow connections give their
// thread up, guarded_stream.h); a flood of connects costs a bounded queue, not memory; and a
// --threads default large enough for 512 busy connections costs nothing at 32 (bench/load/tuning.md).

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
  // waiting: where the queue publishes how many connections wait for a thread, the pressure that
  // makes idle and slow connections give their thread up.
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
  // A thread waiting for a task, woken by the enqueue that hands it one.
  struct Idle {
    std::condition_variable wake;
    bool woken = false;
  };

  void work();
  void publish();  // with mutex_ held

  const std::size_t maxThreads_;
  const std::size_t maxQueued_;
  std::atomic<std::size_t>& waiting_;
  std::mutex mutex_;
  std::deque<std::function<void()>> jobs_;
  std::vector<Idle*> idle_;   // the one that went idle last at the back
  std::size_t handedOff_ = 0; // threads woken for a job that have not taken it yet
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mothership
