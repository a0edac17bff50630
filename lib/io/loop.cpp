#include "io/loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>
#include <system_error>

#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

int createEpoll() {
  const int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  return fd;
}

int createWakeFd(int epoll) {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    const int error = errno;
    ::close(epoll);
    throw std::system_error(error, std::generic_category(), "eventfd");
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = static_cast<std::uint32_t>(fd);  // registration 0
  if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0) {
    const int error = errno;
    ::close(fd);
    ::close(epoll);
    throw std::system_error(error, std::generic_category(), "epoll_ctl");
  }
  return fd;
}

}  // namespace

Loop::Loop() : epoll_(createEpoll()), wakeFd_(createWakeFd(epoll_)) {}

Loop::~Loop() {
  stop();
  ::close(wakeFd_);
  ::close(epoll_);
}

bool Loop::post(Task task) {
  bool wakeUp = false;
  {
    std::lock_guard<std::mutex> guard(postMutex_);
    if (stopping_) return false;
    if (!started_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> threadGuard(threadMutex_);
      if (!thread_.joinable()) {
        thread_ = std::thread([this] { threadMain(); });
        started_ = true;
      }
    }
    wakeUp = queueLocked(std::move(task));
  }
  if (wakeUp) wake();
  return true;
}

bool Loop::postIfStartedElseStop(Task task) {
  bool wakeUp = false;
  {
    std::lock_guard<std::mutex> guard(postMutex_);
    if (stopping_) return false;
    if (!started_.load(std::memory_order_relaxed)) {
      stopping_ = true;  // no thread, and none will start: stop() has nothing to join
      return false;
    }
    wakeUp = queueLocked(std::move(task));
  }
  if (wakeUp) wake();
  return true;
}

bool Loop::queueLocked(Task task) {
  posted_.push_back(std::move(task));
  // One wake-up per batch: the loop clears wakePending_ when it takes the queue.
  if (wakePending_) return false;
  wakePending_ = true;
  return true;
}

void Loop::wake() {
  const std::uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the loop wakes anyway.
  [[maybe_unused]] const ssize_t written = ::write(wakeFd_, &one, sizeof one);
}

void Loop::stop() {
  std::vector<Task> dropped;
  {
    std::lock_guard<std::mutex> guard(postMutex_);
    if (!stopping_) {
      stopping_ = true;
      posted_.push_back([this] { quit_ = true; });
    }
  }
  wake();
  std::thread thread;
  {
    std::lock_guard<std::mutex> guard(threadMutex_);
    thread = std::move(thread_);
  }
  if (thread.joinable()) {
    if (thread.get_id() == std::this_thread::get_id()) {
      // Cannot join itself: run() returns after this iteration (the tasks already posted run
      // first, the quit task among them; none is dropped under the iteration's feet).
      thread.detach();
      quit_ = true;
      return;
    }
    thread.join();
  }
  std::lock_guard<std::mutex> guard(postMutex_);
  dropped.swap(posted_);
}

bool Loop::inLoopThread() const noexcept { return threadId_.load() == std::this_thread::get_id(); }

bool Loop::started() const noexcept { return started_.load(); }

Loop::TimerId Loop::at(Deadline when, Task task) {
  const TimerId id = nextTimer_++;
  timers_.emplace(std::make_pair(when, id), std::move(task));
  timerDeadlines_.emplace(id, when);
  return id;
}

void Loop::cancel(TimerId id) noexcept {
  const auto it = timerDeadlines_.find(id);
  if (it == timerDeadlines_.end()) return;
  timers_.erase({it->second, id});
  timerDeadlines_.erase(it);
}

void Loop::watch(int fd, IoHandler* handler, std::uint32_t events) {
  if (forked_) return;
  const auto known = handlers_.find(fd);
  Watched watched{handler, known != handlers_.end() && known->second.handler == handler ? known->second.registration
                                                                                      : ++registrations_};
  if (watched.registration == 0) watched.registration = ++registrations_;  // 0 is the wake-up descriptor's
  epoll_event event{};
  event.events = events;
  event.data.u64 = (std::uint64_t{watched.registration} << 32) | static_cast<std::uint32_t>(fd);
  if (::epoll_ctl(epoll_, known != handlers_.end() ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &event) != 0) {
    throw Error(ErrorCode::ConnectionLost, std::string("cannot watch a socket: ") + std::strerror(errno));
  }
  handlers_[fd] = watched;
}

void Loop::unwatch(int fd) noexcept {
  // In a fork() child, EPOLL_CTL_DEL would remove the parent's registration from the shared set.
  if (forked_) return;
  if (handlers_.erase(fd) == 0) return;
  ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
}

void Loop::atEndOfIteration(Task task) { endOfIteration_.push_back(std::move(task)); }

int Loop::waitMilliseconds() {
  if (!endOfIteration_.empty()) return 0;
  if (timers_.empty()) return -1;
  const auto left = timers_.begin()->first.first - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  // Rounded up: waking a little early would only loop once more.
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

void Loop::runTimers() {
  const Deadline now = Clock::now();
  // The timers due now, in deadline order, each taken out just before it runs: one may cancel
  // another due at the same time, which then never runs. Timers added while running (even ones
  // already due) wait for the next iteration.
  std::vector<std::pair<Deadline, TimerId>> due;
  for (auto it = timers_.begin(); it != timers_.end() && it->first.first <= now; ++it) due.push_back(it->first);
  for (const auto& key : due) {
    auto node = timers_.extract(key);
    if (node.empty()) continue;  // cancelled by a timer that ran before it
    timerDeadlines_.erase(key.second);
    node.mapped()();
  }
}

void Loop::keepUntilExit(std::shared_ptr<void> owner) noexcept {
  std::lock_guard<std::mutex> guard(threadMutex_);
  exitHold_ = std::move(owner);
}

void Loop::threadMain() {
  run();
  std::shared_ptr<void> owner;
  {
    std::lock_guard<std::mutex> guard(threadMutex_);
    owner.swap(exitHold_);
  }
  // owner may be the last reference to what holds this Loop: destroyed here, after which nothing of
  // this Loop is touched again (stop() detached this thread before run() returned).
}

void Loop::run() {
  threadId_ = std::this_thread::get_id();
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  std::vector<Task> tasks;
  for (;;) {
    const int timeout = waitMilliseconds();
    const int ready = ::epoll_wait(epoll_, events, kMaxEvents, timeout);
    std::lock_guard<std::mutex> work(work_);
    for (int i = 0; i < ready; ++i) {
      const int fd = static_cast<int>(static_cast<std::uint32_t>(events[i].data.u64));
      const auto registration = static_cast<std::uint32_t>(events[i].data.u64 >> 32);
      if (fd == wakeFd_ && registration == 0) {
        std::uint64_t count;
        [[maybe_unused]] const ssize_t got = ::read(wakeFd_, &count, sizeof count);
        continue;
      }
      // A handler may close (and unwatch) another descriptor of this batch, whose number a new
      // socket may then take: look it up each time, and check it is the same registration.
      const auto it = handlers_.find(fd);
      if (it != handlers_.end() && it->second.registration == registration) it->second.handler->onIo(events[i].events);
    }
    runTimers();
    {
      std::lock_guard<std::mutex> guard(postMutex_);
      tasks.swap(posted_);
      wakePending_ = false;
    }
    for (auto& task : tasks) task();
    tasks.clear();
    while (!endOfIteration_.empty()) {
      std::vector<Task> last;
      last.swap(endOfIteration_);
      for (auto& task : last) task();
    }
    if (quit_) break;
  }
  threadId_ = std::thread::id();  // what runs on this thread from now on is not the loop's
}

void Loop::abandonAfterFork() noexcept {
  forked_ = true;
  handlers_.clear();
  {
    std::lock_guard<std::mutex> guard(threadMutex_);
    // The thread does not exist in this process: detach() only marks the copied descriptor of it.
    if (thread_.joinable()) thread_.detach();
  }
  std::lock_guard<std::mutex> guard(postMutex_);
  stopping_ = true;
  std::vector<Task>().swap(posted_);
}

}  // namespace streamlock::detail
