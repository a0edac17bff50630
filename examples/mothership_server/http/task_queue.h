#pragma once

// The bounded task queue: the threads on which the routes that block run (/healthz: a SELECT 1 and a
// PING, each bounded), so that the event loop never waits (http_server.h). At most `threads`
// threads run them, started as tasks need them; past maxQueued waiting tasks the next one is
// refused: it runs at once on the calling thread with refusing() true, and answers 503.
// Earns: a flood of /healthz while PostgreSQL hangs costs a bounded queue and a few threads, and
// the loop keeps serving the other routes (the topology test "a hung first PostgreSQL host").

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
  // waiting: where the queue publishes how many tasks wait for a thread.
  BoundedTaskQueue(std::size_t threads, std::size_t maxQueued, std::atomic<std::size_t>& waiting);
  ~BoundedTaskQueue() override;  // shutdown()

  // Queues fn; when the queue is full, runs it at once on the calling (accepting) thread with
  // refusing() true, so that it answers 503 and closes.
  void enqueue(std::function<void()> fn) override;

  // Runs what is queued, and joins the threads. Idempotent.
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
