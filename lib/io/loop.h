#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/clock.h"

namespace streamlock::detail {

// Told which events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP) a watched descriptor is ready for.
class IoHandler {
 public:
  virtual void onIo(std::uint32_t events) = 0;

 protected:
  ~IoHandler() = default;
};

// One I/O thread: an epoll set, timers, and a queue of tasks that any thread may post. Everything
// else in the library that touches a socket runs on this thread, so that none of it needs a lock.
//
// Loop-thread-only members say so; the others are thread-safe.
class Loop {
 public:
  using Task = std::function<void()>;
  using TimerId = std::uint64_t;

  Loop();
  ~Loop();  // stops and joins the thread (never call it on the loop thread)
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs task on the loop thread, after the tasks posted before it, starting the thread on first
  // use. Returns false (and drops the task) once stop() has begun. Never blocks on I/O.
  bool post(Task task);

  // Shutting down: runs task on the loop thread as post() does when the thread has started;
  // otherwise stops the loop for good (later posts fail) without starting it, and drops task.
  // Decided under the lock post() takes, so that no post can start the thread in between (a
  // first call racing the shutdown either runs before task, or fails). True when task was queued.
  bool postIfStartedElseStop(Task task);
  // Asks the thread to return after its current iteration, and joins it. Tasks still queued are
  // dropped (destroyed on the calling thread). Idempotent.
  void stop();

  bool inLoopThread() const noexcept;
  bool started() const noexcept;

  // --- Loop thread only ---------------------------------------------------------------------
  // Runs task once at `when` (at once if it has passed, but never inside this call).
  TimerId at(Deadline when, Task task);
  // A cancelled (or already run) timer never runs; cancelling 0 or an unknown id is harmless.
  void cancel(TimerId id) noexcept;
  // Watches fd for events (EPOLLIN / EPOLLOUT, level-triggered); replaces an earlier interest.
  void watch(int fd, IoHandler* handler, std::uint32_t events);
  void unwatch(int fd) noexcept;
  // Runs task once at the end of the current iteration, after every event, timer and posted task
  // of it: where the commands that several callers queued in one iteration are written at once.
  void atEndOfIteration(Task task);

  // Loop thread only, for a shutdown that began there (its owner cannot be destroyed, nor the thread
  // joined, from inside an iteration): the thread keeps owner and lets go of it once run() has
  // returned, so that the owner (and this Loop) may be destroyed on this thread, after the loop
  // stopped touching itself. The thread is detached by stop() called on it.
  void keepUntilExit(std::shared_ptr<void> owner) noexcept;

  // --- fork() support (fork.cpp) ------------------------------------------------------------------
  // Held by the loop thread while it works (not while it waits in epoll_wait): whoever holds it
  // knows that the loop's data is consistent, which a fork() child needs to free it.
  std::mutex& workMutex() noexcept { return work_; }
  std::mutex& postMutex() noexcept { return postMutex_; }
  // In a fork() child: forget the thread (it does not exist there) without joining it, and close
  // the loop's own descriptors. Only memory is freed afterwards.
  void abandonAfterFork() noexcept;

 private:
  void run();
  // The thread's body: run(), then drops what keepUntilExit() gave it (possibly this Loop's owner).
  void threadMain();
  void runTimers();
  int waitMilliseconds();
  void wake();
  // postMutex_ held: queues task; true when the loop must be woken (the first of a batch).
  bool queueLocked(Task task);

  const int epoll_;
  const int wakeFd_;

  std::mutex postMutex_;
  std::vector<Task> posted_;
  bool stopping_ = false;
  bool wakePending_ = false;

  std::mutex threadMutex_;  // start and stop of the thread
  std::thread thread_;
  std::atomic<std::thread::id> threadId_{};
  std::atomic<bool> started_{false};
  std::shared_ptr<void> exitHold_;  // threadMutex_: see keepUntilExit

  std::mutex work_;
  bool quit_ = false;  // loop thread: leave after this iteration
  bool forked_ = false;  // a fork() child's copy: the epoll set is shared with the parent, never touched
  std::map<std::pair<Deadline, TimerId>, Task> timers_;
  std::unordered_map<TimerId, Deadline> timerDeadlines_;
  TimerId nextTimer_ = 1;
  // What each watched descriptor reports to. A registration's number rides in its epoll events, so
  // that an event reported for a descriptor closed meanwhile in the same batch (its number taken
  // again by a new socket) is not handed to the new one's handler.
  struct Watched {
    IoHandler* handler = nullptr;
    std::uint32_t registration = 0;
  };
  std::unordered_map<int, Watched> handlers_;
  std::uint32_t registrations_ = 0;
  std::vector<Task> endOfIteration_;
};

}  // namespace streamlock::detail
