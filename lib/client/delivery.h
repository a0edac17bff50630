#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "streamlock/completion.h"
#include "streamlock/log.h"

namespace streamlock::detail {

// Where completions and ownership-lost callbacks run: the host's executor when it gave one, else
// one library callback thread (started on first use) that runs them in order. Never the I/O
// thread: a slow callback delays other callbacks, never I/O or heartbeats. Thread-safe.
class Delivery {
 public:
  Delivery(Executor executor, Logger logger);
  ~Delivery();  // stop()
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  // Hands task over to run soon, elsewhere: to the executor (also after stop(), not in a fork()
  // child), else to the callback thread. False, with task left to the caller, when nothing can take
  // it (no executor and stop() has begun, or a fork() child).
  bool post(std::function<void()>&& task) noexcept;

  // Runs what is queued, then ends the callback thread and joins it. Called on the callback thread
  // itself (a callback that shuts the Client down), it cannot join: the thread then runs the rest
  // of the queue after the current callback and ends by itself. Idempotent.
  void stop() noexcept;

  bool onCallbackThread() const noexcept;

  // fork() support: the queue's mutex (the fork handlers hold it across fork()), and forgetting
  // the thread in a child, where it does not exist.
  std::mutex& queueMutex() noexcept;
  void abandonAfterFork() noexcept;

 private:
  // Shared with the thread, so that a thread that had to detach never touches a freed Delivery.
  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::function<void()>> tasks;
    bool stopping = false;
    bool forked = false;  // a fork() child's copy
    std::thread::id thread;
  };
  static void run(std::shared_ptr<Queue> queue, Logger logger);
  bool queueOnThread(std::function<void()>& task) noexcept;

  const Executor executor_;
  const Logger logger_;
  const std::shared_ptr<Queue> queue_;
  std::mutex threadMutex_;
  std::thread thread_;
};

}  // namespace streamlock::detail
