#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "io.h"
#include "streamlock/error.h"

namespace streamlock::detail {

// A bounded pool of connections: a mutex, a condition variable and a stack of idle connections.
// Connecting happens outside the lock. A connection that is broken() when given back, or that
// died while idle (deadWhileIdle()), is dropped instead of being handed out again. A caller that
// sends its command once more on a fresh connection when a reused one turns out lost may skip the
// idle check (a poll() per lease) for connections given back less than kTrustIdleFor ago.
template <typename Connection>
class Pool {
 public:
  // Opens one connection; acquire()'s deadline is passed on for the factory to honour.
  using Factory = std::function<std::unique_ptr<Connection>(Deadline)>;

  Pool(std::size_t capacity, std::string name, Factory open)
      : capacity_(capacity == 0 ? 1 : capacity), name_(std::move(name)), open_(std::move(open)) {}
  ~Pool() { close(); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> connection, bool reused)
        : pool_(pool), connection_(std::move(connection)), reused_(reused) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (connection_) pool_->giveBack(std::move(connection_));
    }
    Connection* operator->() const noexcept { return connection_.get(); }
    // Whether the connection came from the idle list, where it may have died unnoticed.
    bool reused() const noexcept { return reused_; }

   private:
    Pool* pool_;
    std::unique_ptr<Connection> connection_;
    bool reused_;
  };

  static constexpr std::chrono::milliseconds kTrustIdleFor{1000};

  // Whether acquire() checks an idle connection that was given back moments ago.
  enum class IdleCheck { Always, SkipRecent };

  // An idle connection, or a new one while fewer than capacity exist, else waits for one to be
  // given back until the deadline. Throws Error(PoolExhausted) when none frees up in time,
  // Error(ShutDown) after close(), and whatever the factory throws. With IdleCheck::SkipRecent the
  // caller must retry once on a fresh connection when a reused() one turns out lost.
  Lease acquire(Deadline deadline, IdleCheck check = IdleCheck::Always) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (closed_) throw Error(ErrorCode::ShutDown, "the " + name_ + " pool is closed");
      while (!idle_.empty()) {
        Idle idle = std::move(idle_.back());
        idle_.pop_back();
        std::unique_ptr<Connection> connection = std::move(idle.connection);
        const bool recent = check == IdleCheck::SkipRecent && Clock::now() - idle.since < kTrustIdleFor;
        if (recent || !connection->deadWhileIdle()) return Lease(this, std::move(connection), true);
        --count_;
        lock.unlock();
        connection.reset();
        lock.lock();
      }
      if (count_ < capacity_) {
        ++count_;
        lock.unlock();
        try {
          return Lease(this, open_(deadline), false);
        } catch (...) {
          lock.lock();
          --count_;
          returned_.notify_one();
          throw;
        }
      }
      if (returned_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() && count_ >= capacity_) {
        throw Error(ErrorCode::PoolExhausted, "no " + name_ + " connection freed up before the deadline");
      }
    }
  }

  // Drops every idle connection, e.g. once one of them turned out dead after a server restart.
  void dropIdle() {
    std::deque<Idle> dropped;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      dropped.swap(idle_);
      count_ -= dropped.size();
    }
    returned_.notify_all();
  }

  // Drops idle connections now and leased ones when given back; acquire() then throws.
  void close() {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      closed_ = true;
    }
    dropIdle();
  }

  struct Stats {
    std::size_t open = 0;
    std::size_t idle = 0;
  };
  Stats stats() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return {count_, idle_.size()};
  }

 private:
  void giveBack(std::unique_ptr<Connection> connection) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (connection->broken() || closed_) {
      --count_;
      lock.unlock();
      connection.reset();
    } else {
      idle_.push_back(Idle{std::move(connection), Clock::now()});
      lock.unlock();
    }
    returned_.notify_one();
  }

  const std::size_t capacity_;
  const std::string name_;
  const Factory open_;
  mutable std::mutex mutex_;
  std::condition_variable returned_;
  struct Idle {
    std::unique_ptr<Connection> connection;
    Deadline since;  // when it was given back
  };
  std::deque<Idle> idle_;
  std::size_t count_ = 0;  // open connections, idle or leased
  bool closed_ = false;
};

}  // namespace streamlock::detail
