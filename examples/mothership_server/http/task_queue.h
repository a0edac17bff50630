#pragma once

// The bounded task queue: the threads on which the routes that block run (/healthz: a SELECT 1 and a
// PING, each bounded), so that the event loop never waits (http_server.h). At most `threads`
// threads run them, started as tasks need them; when maxQueued tasks already wait, the next one is
// refused and its caller answers at once instead.
// Earns: a flood of /healthz while PostgreSQL hangs costs a bounded queue and a few threads, and
// the loop keeps serving the other routes (the test "/healthz with its check threads all taken").

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mothership {

class BoundedTaskQueue {
 public:
  BoundedTaskQueue(std::size_t threads, std::size_t maxQueued);
  ~BoundedTaskQueue();  // shutdown()
  BoundedTaskQueue(const BoundedTaskQueue&) = delete;
  BoundedTaskQueue& operator=(const BoundedTaskQueue&) = delete;

  // Queues task; false (task not taken) when maxQueued tasks wait, no thread can run it, or the
  // queue is shut down. Any thread.
  bool tryEnqueue(std::function<void()> task);

  // Runs what is queued, and joins the threads. Idempotent.
  void shutdown();

 private:
  void work();

  const std::size_t maxThreads_;
  const std::size_t maxQueued_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  std::size_t idle_ = 0;  // threads waiting for a job
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace mothership
