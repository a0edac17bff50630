// PostgreSQL on the I/O thread: PgPool's completion form, pipelining on few connections, the
// bounds of a statement, of the pool wait and of a connect (a host that never answers, several
// hosts), losing connections (cut while idle, a server restart), close() and fork().
#include <catch2/catch.hpp>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capture_log.h"
#include "client/delivery.h"
#include "env.h"
#include "error_of.h"
#include "io/loop.h"
#include "net_faults.h"
#include "pg.h"
#include "pg/access.h"
#include "streamlock/error.h"
#include "streamlock/postgres.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::PgParams;
using streamlock::PgPool;
using streamlock::PgResult;
using streamlock::PostgresOptions;
using streamlock::Result;
using streamlock::detail::Delivery;
using streamlock::detail::Loop;
using streamlock::detail::PgPoolAccess;
using namespace std::chrono_literals;
namespace test = streamlock::test;
using streamlock::test::errorOf;
using Clock = std::chrono::steady_clock;

namespace {

PostgresOptions poolOptions(std::size_t poolSize, const std::string& conninfo = test::databaseUrl()) {
  PostgresOptions options;
  options.conninfo = conninfo;
  options.poolSize = poolSize;
  return options;
}

// host=127.0.0.1 port=P dbname=... user=... for the test cluster (or another port).
std::string conninfoOnPort(const std::string& port) {
  return "host=127.0.0.1 port=" + port + " dbname=streamlock_test user=postgres";
}
std::string realPort() { return test::requireEnv("STREAMLOCK_TEST_PG_PORT"); }

int runShell(const std::string& command) {
  const int status = std::system(command.c_str());
  return status == -1 ? -1 : WEXITSTATUS(status);
}

// What one completion saw; collected under a mutex, checked on the test thread (Catch2's
// assertions are not thread-safe).
struct Outcome {
  int calls = 0;
  bool ok = false;
  std::string value;  // value(0, 0) of a success with rows
  ErrorCode code = ErrorCode::InvalidArgument;
  std::string sqlstate;
  std::thread::id thread;
  bool onCallerThread = false;
  Clock::time_point at;
};

class Outcomes {
 public:
  explicit Outcomes(std::size_t count) : items_(count) {}

  // The completion for slot i. The caller's thread is compared with the completion's.
  streamlock::Completion<Result<PgResult>> slot(std::size_t i) {
    return [this, i, caller = std::this_thread::get_id()](Result<PgResult> outcome) {
      record(i, std::move(outcome), caller);
    };
  }
  // A completion for PgPoolAccess::execute (on the loop thread).
  streamlock::detail::PgDone loopSlot(std::size_t i) {
    return [this, i, caller = std::this_thread::get_id()](Result<PgResult> outcome) {
      record(i, std::move(outcome), caller);
    };
  }

  bool waitAll(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return ready_.wait_for(lock, timeout, [&] { return completed_ == items_.size(); });
  }
  bool waitFor(std::size_t i, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return ready_.wait_for(lock, timeout, [&] { return items_[i].calls > 0; });
  }
  Outcome get(std::size_t i) {
    std::lock_guard<std::mutex> guard(mutex_);
    return items_[i];
  }
  std::size_t size() const noexcept { return items_.size(); }

 private:
  void record(std::size_t i, Result<PgResult> outcome, std::thread::id caller) {
    std::lock_guard<std::mutex> guard(mutex_);
    Outcome& item = items_[i];
    if (++item.calls == 1) ++completed_;
    item.thread = std::this_thread::get_id();
    item.onCallerThread = item.thread == caller;
    item.at = Clock::now();
    if (outcome.ok()) {
      item.ok = true;
      const PgResult& rows = outcome.value();
      if (rows.rows() > 0 && rows.columns() > 0) item.value = std::string(rows.value(0, 0));
    } else {
      item.code = outcome.error()->code();
      item.sqlstate = outcome.error()->sqlstate();
    }
    ready_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<Outcome> items_;
  std::size_t completed_ = 0;
};

// A pool wired as a Client wires it: a loop and a delivery of the test's, maxInFlight chosen.
struct WiredPool {
  WiredPool(PostgresOptions options, streamlock::Logger logger, std::size_t maxInFlight)
      : delivery(std::make_shared<Delivery>(streamlock::Executor{}, logger)) {
    pool = PgPoolAccess::make({loop, delivery, std::move(options), std::move(logger), maxInFlight});
  }
  ~WiredPool() {
    pool.reset();
    loop.stop();
    delivery->stop();
  }
  PgPool& operator*() { return *pool; }
  PgPool* operator->() { return pool.get(); }

  Loop loop;
  std::shared_ptr<Delivery> delivery;
  std::unique_ptr<PgPool> pool;
};

long long activeWith(test::TestDb& db, const std::string& tag) {
  return db.number("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND strpos(query, $1) > 0 "
                   "AND pid <> pg_backend_pid()",
                   {tag});
}

long long lockWaitersWith(test::TestDb& db, const std::string& tag) {
  return db.number("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                   {tag});
}

// Holds a row lock of a chat in an open transaction on a connection of its own.
class RowLock {
 public:
  RowLock(const std::string& table, const std::string& id) {
    db_.exec("BEGIN");
    db_.exec("SELECT 1 FROM " + table + " WHERE id = $1::uuid FOR UPDATE", {id});
  }
  ~RowLock() { release(); }
  void release() {
    if (held_) db_.exec("ROLLBACK");
    held_ = false;
  }

 private:
  test::TestDb db_;
  bool held_ = true;
};

}  // namespace

TEST_CASE("completion form: exactly once, never inside the call, on the callback thread") {
  test::CapturedLog log;
  Outcomes outcomes(3);
  PgPool pool(poolOptions(2), log.logger());
  // The completion takes this mutex; the caller holds it across the call: a completion that ran
  // inside the call on the caller's thread is recorded as such, one on another thread waits.
  std::mutex held;
  std::vector<bool> returnedFirst(3, false);
  std::atomic<bool> returned[3] = {false, false, false};
  for (std::size_t i = 0; i < 3; ++i) {
    std::lock_guard<std::mutex> guard(held);
    auto record = outcomes.slot(i);
    pool.execute("SELECT $1::int * 2", {std::to_string(i)},
                 [&, i, record](Result<PgResult> outcome) {
                   std::lock_guard<std::mutex> wait(held);
                   returnedFirst[i] = returned[i].load();
                   record(std::move(outcome));
                 });
    returned[i] = true;
  }
  REQUIRE(outcomes.waitAll(10s));
  std::this_thread::sleep_for(100ms);  // a second call would show by now
  for (std::size_t i = 0; i < 3; ++i) {
    const Outcome outcome = outcomes.get(i);
    CHECK(outcome.calls == 1);
    CHECK(outcome.ok);
    CHECK(outcome.value == std::to_string(2 * i));
    CHECK_FALSE(outcome.onCallerThread);
    CHECK(returnedFirst[i]);
    CHECK(outcome.thread == outcomes.get(0).thread);  // one callback thread
  }
}

TEST_CASE("completion form: on the executor given to a standalone PgPool") {
  test::CapturedLog log;
  // The host's executor: queues tasks; the test thread runs them.
  std::mutex mutex;
  std::condition_variable queued;
  std::deque<std::function<void()>> tasks;
  std::atomic<int> submittedFromTestThread{0};
  const auto testThread = std::this_thread::get_id();
  streamlock::Executor executor = [&](std::function<void()> task) {
    if (std::this_thread::get_id() == testThread) ++submittedFromTestThread;
    std::lock_guard<std::mutex> guard(mutex);
    tasks.push_back(std::move(task));
    queued.notify_all();
  };
  Outcomes outcomes(2);
  {
    PgPool pool(poolOptions(1), log.logger(), executor);
    pool.execute("SELECT 'via executor'", {}, outcomes.slot(0));
    pool.execute("SELECT * FROM no_such_table_pg_async", {}, outcomes.slot(1));
    for (int ran = 0; ran < 2; ++ran) {
      std::unique_lock<std::mutex> lock(mutex);
      REQUIRE(queued.wait_for(lock, 10s, [&] { return !tasks.empty(); }));
      auto task = std::move(tasks.front());
      tasks.pop_front();
      lock.unlock();
      task();  // on the test thread: the host's loop
    }
  }
  const Outcome first = outcomes.get(0), second = outcomes.get(1);
  CHECK(first.calls == 1);
  CHECK(first.ok);
  CHECK(first.value == "via executor");
  CHECK(first.onCallerThread);  // run by the test thread, from the executor's queue
  CHECK(second.calls == 1);
  CHECK(second.code == ErrorCode::ServerError);
  CHECK(second.sqlstate == "42P01");
  CHECK(submittedFromTestThread == 0);  // handed over from the I/O thread, never inside execute
  CHECK(tasks.empty());
}

TEST_CASE("completion form: invalid arguments and ShutDown are values, delivered after the call returns") {
  test::CapturedLog log;
  Outcomes outcomes(3);
  PgPool pool(poolOptions(1), log.logger());
  pool.execute("SELECT $1::text", {std::string("own\0junk", 8)}, outcomes.slot(0));
  pool.close();
  pool.execute("SELECT 1", {}, outcomes.slot(1));
  pool.execute("SELECT 1", {}, outcomes.slot(2));
  REQUIRE(outcomes.waitAll(10s));
  CHECK(outcomes.get(0).code == ErrorCode::InvalidArgument);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(outcomes.get(i).calls == 1);
    CHECK_FALSE(outcomes.get(i).onCallerThread);  // on the callback thread, which still runs
  }
  CHECK(outcomes.get(1).code == ErrorCode::ShutDown);
  CHECK(outcomes.get(2).code == ErrorCode::ShutDown);
}

TEST_CASE("200 concurrent completion-form statements on a pool of 4 connections all complete") {
  const std::size_t maxInFlight = GENERATE(std::size_t{1}, std::size_t{16});
  CAPTURE(maxInFlight);
  test::TestDb db;
  test::CapturedLog log;
  const std::string application = "pg_async_" + test::uniqueId();
  Outcomes outcomes(200);
  {
    WiredPool pool(poolOptions(4, test::databaseUrl() + "?application_name=" + application), log.logger(),
                   maxInFlight);
    const auto start = Clock::now();
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
      pool->execute("SELECT $1::int * 3", {std::to_string(i)}, outcomes.slot(i));
    }
    REQUIRE(outcomes.waitAll(30s));
    INFO("200 statements in " << test::elapsedSince(start).count() << " ms");
    CHECK(pool->stats().open <= 4);
    CHECK(pool->stats().capacity == 4);
    CHECK(db.number("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {application}) <= 4);
  }
  int wrong = 0, failed = 0, calls = 0;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome outcome = outcomes.get(i);
    calls += outcome.calls;
    if (!outcome.ok) ++failed;
    if (outcome.ok && outcome.value != std::to_string(3 * i)) ++wrong;
  }
  CHECK(calls == 200);
  CHECK(failed == 0);
  CHECK(wrong == 0);
}

TEST_CASE("a failing statement in a pipeline fails only its own caller") {
  test::CapturedLog log;
  Outcomes outcomes(12);
  WiredPool pool(poolOptions(1), log.logger(), 16);
  // Queued while the one connection opens, then pipelined on it together.
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    if (i == 5 || i == 9) {
      // The same failing text twice: the second was sent behind the failed Prepare of the first.
      pool->execute("SELECT * FROM no_such_table_pg_async", {}, outcomes.slot(i));
    } else if (i % 4 == 3) {
      pool->execute("SELECT 1 / $1::int", {"0"}, outcomes.slot(i));
    } else if (i == 10) {
      pool->execute("SELEC broken syntax", {}, outcomes.slot(i));
    } else {
      pool->execute("SELECT $1::int", {std::to_string(i)}, outcomes.slot(i));
    }
  }
  REQUIRE(outcomes.waitAll(10s));
  CHECK(pool->stats().open == 1);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    CAPTURE(i);
    const Outcome outcome = outcomes.get(i);
    CHECK(outcome.calls == 1);
    if (i == 5 || i == 9) {
      CHECK(outcome.code == ErrorCode::ServerError);
      CHECK(outcome.sqlstate == "42P01");
    } else if (i % 4 == 3) {
      CHECK(outcome.code == ErrorCode::ServerError);
      CHECK(outcome.sqlstate == "22012");
    } else if (i == 10) {
      CHECK(outcome.code == ErrorCode::ServerError);
      CHECK(outcome.sqlstate == "42601");
    } else {
      CHECK(outcome.ok);
      CHECK(outcome.value == std::to_string(i));
    }
  }
  CHECK(pool->execute("SELECT 'still fine'").value(0, 0) == "still fine");
}

TEST_CASE("a statement blocked on a row lock times out within its bound and the server drops it soon after") {
  const std::size_t maxInFlight = GENERATE(std::size_t{1}, std::size_t{16});
  CAPTURE(maxInFlight);
  test::TestDb db;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  const std::string id = chats.insert("stream-1");
  WiredPool pool(poolOptions(2), log.logger(), maxInFlight);
  REQUIRE(pool->execute("SELECT 1").value(0, 0) == "1");  // connected: the bound below is the statement's

  const std::string tag = "pg_async_lock_" + test::uniqueId();
  RowLock lock(chats.name(), id);
  const auto start = Clock::now();
  const auto error = errorOf([&] {
    pool->execute("UPDATE " + chats.name() + " SET conversation_id = 'x' WHERE id = $1::uuid /* " + tag + " */",
                  {id}, 300ms);
  });
  const auto elapsed = test::elapsedSince(start);
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::Timeout);
  CHECK(elapsed >= 290ms);
  CHECK(elapsed < 1500ms);

  // The lock is still held, yet the server ended the waiting statement: its client went away.
  const auto dropStart = Clock::now();
  CHECK(test::waitUntil([&] { return lockWaitersWith(db, tag) == 0; }, 5s));
  INFO("the server dropped the statement after " << test::elapsedSince(dropStart).count() << " ms");
  lock.release();
  CHECK(chats.marker(id) == std::optional<std::string>("stream-1"));  // it never ran
  CHECK(pool->execute("SELECT 2").value(0, 0) == "2");
}

TEST_CASE("the pool wait is bounded while every connection is stalled behind a lock") {
  const std::size_t maxInFlight = GENERATE(std::size_t{1}, std::size_t{16});
  CAPTURE(maxInFlight);
  test::TestDb db;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  const std::string id = chats.insert("stream-1");
  auto options = poolOptions(2);
  options.acquireTimeout = 300ms;
  Outcomes blocked(2);
  WiredPool pool(options, log.logger(), maxInFlight);
  const std::string tag = "pg_async_stall_" + test::uniqueId();
  const std::string update =
      "UPDATE " + chats.name() + " SET conversation_id = $2 WHERE id = $1::uuid /* " + tag + " */";
  RowLock lock(chats.name(), id);
  pool->execute(update, {id, "a"}, blocked.slot(0));
  REQUIRE(test::waitUntil([&] { return lockWaitersWith(db, tag) == 1; }));
  std::this_thread::sleep_for(150ms);  // older than stallAfter: its connection takes no more
  pool->execute(update, {id, "b"}, blocked.slot(1));
  REQUIRE(test::waitUntil([&] { return lockWaitersWith(db, tag) == 2; }));
  std::this_thread::sleep_for(150ms);
  CHECK(pool->stats().open == 2);
  CHECK(pool->stats().inUse == 2);

  const auto start = Clock::now();
  const auto exhausted = errorOf([&] { pool->execute("SELECT 1"); });
  const auto elapsed = test::elapsedSince(start);
  REQUIRE(exhausted);
  CHECK(exhausted->code() == ErrorCode::PoolExhausted);
  CHECK(elapsed >= 290ms);
  CHECK(elapsed < 1500ms);

  lock.release();
  REQUIRE(blocked.waitAll(10s));
  CHECK(blocked.get(0).ok);
  CHECK(blocked.get(1).ok);
  CHECK(pool->execute("SELECT 1").value(0, 0) == "1");
}

TEST_CASE("statements pipelined behind one that timed out are queued once more") {
  test::CapturedLog log;
  test::TestDb db;
  Outcomes outcomes(3);
  WiredPool pool(poolOptions(1), log.logger(), 16);
  const std::string tag = "pg_async_behind_" + test::uniqueId();
  // Queued while the connection opens, then pipelined: the sleep first, the others behind it.
  streamlock::detail::StatementLimits slow = PgPoolAccess::limits(*pool, 300ms);
  PgPoolAccess::execute(*pool, "SELECT pg_sleep(3) /* " + tag + " */", {}, slow, outcomes.loopSlot(0));
  pool->execute("SELECT $1::text", {"second"}, outcomes.slot(1));
  pool->execute("SELECT $1::text", {"third"}, outcomes.slot(2));
  const auto start = Clock::now();
  REQUIRE(outcomes.waitAll(10s));
  CHECK(outcomes.get(0).code == ErrorCode::Timeout);
  CHECK(outcomes.get(1).ok);
  CHECK(outcomes.get(1).value == "second");
  CHECK(outcomes.get(2).ok);
  CHECK(outcomes.get(2).value == "third");
  CHECK(outcomes.get(2).at - start < 2500ms);  // not after the 3 s sleep
  CHECK(test::waitUntil([&] { return activeWith(db, tag) == 0; }, 5s));
}

TEST_CASE("a statement that times out behind another fails alone: the one ahead of it runs on") {
  test::CapturedLog log;
  test::TestDb db;
  WiredPool pool(poolOptions(1), log.logger(), 16);
  REQUIRE(pool->execute("SELECT 1").value(0, 0) == "1");  // the connection is open
  const std::string tag = "pg_async_ahead_" + test::uniqueId();
  Outcomes outcomes(3);
  // One connection: the slow statement first, with time to spare; two short timeouts behind it.
  const auto start = Clock::now();
  PgPoolAccess::execute(*pool, "SELECT 'slow' FROM pg_sleep(1.5) /* " + tag + " */", {},
                        PgPoolAccess::limits(*pool, 10s), outcomes.loopSlot(0));
  REQUIRE(test::waitUntil([&] { return activeWith(db, tag) == 1; }, 5s));
  PgPoolAccess::execute(*pool, "SELECT 'first behind'", {}, PgPoolAccess::limits(*pool, 200ms), outcomes.loopSlot(1));
  PgPoolAccess::execute(*pool, "SELECT 'second behind'", {}, PgPoolAccess::limits(*pool, 500ms), outcomes.loopSlot(2));
  REQUIRE(outcomes.waitAll(10s));
  CHECK(outcomes.get(1).code == ErrorCode::Timeout);
  CHECK(outcomes.get(2).code == ErrorCode::Timeout);
  CHECK(outcomes.get(1).at - start < 1200ms);
  CHECK(outcomes.get(2).at - start < 1200ms);
  // The slow one was neither failed nor sent again: it answers once, after its 1.5 s.
  const auto slow = outcomes.get(0);
  CHECK(slow.calls == 1);
  CHECK(slow.ok);
  CHECK(slow.value == "slow");
  CHECK(slow.at - start < 2500ms);
  CHECK(pool->execute("SELECT $1::text", {"after"}).value(0, 0) == "after");
}

TEST_CASE("prepared statements gone stale (ALTER TABLE, DEALLOCATE ALL) are prepared again, not failed for good") {
  test::CapturedLog log;
  test::TestDb db;
  const std::string table = "stale_" + test::uniqueId();
  db.exec("CREATE TABLE " + table + " (a int)");
  db.exec("INSERT INTO " + table + " VALUES (1)");
  struct Drop {
    test::TestDb& db;
    const std::string& table;
    ~Drop() { db.exec("DROP TABLE IF EXISTS " + table); }
  } drop{db, table};
  PgPool pool(poolOptions(1), log.logger());
  const std::string select = "SELECT * FROM " + table;
  REQUIRE(pool.execute(select).columns() == 1);

  SECTION("a column added: the cached plan's row type changed (0A000)") {
    db.exec("ALTER TABLE " + table + " ADD COLUMN b text DEFAULT 'x'");
    for (int i = 0; i < 3; ++i) {
      const auto rows = pool.execute(select);
      CHECK(rows.columns() == 2);
      CHECK(rows.value(0, 1) == "x");
    }
  }
  SECTION("a caller's DEALLOCATE ALL: the prepared statement is gone (26000)") {
    (void)pool.execute("DEALLOCATE ALL");
    for (int i = 0; i < 3; ++i) CHECK(pool.execute(select).value(0, 0) == "1");
  }
}

TEST_CASE("a connection prepares at most 256 SQL texts, and runs more unprepared") {
  test::CapturedLog log;
  PgPool pool(poolOptions(1), log.logger());
  for (int i = 0; i < 300; ++i) {
    CHECK(pool.execute("SELECT " + std::to_string(i) + "::int AS n").value(0, 0) == std::to_string(i));
  }
  const auto prepared = std::stoll(std::string(pool.execute("SELECT count(*) FROM pg_prepared_statements").value(0, 0)));
  CHECK(prepared <= 257);  // 256 and, unprepared past them, nothing for the count itself
  CHECK(prepared >= 256);
}

TEST_CASE("an event of a descriptor closed earlier in the same batch never reaches the socket that took its number",
          "[unit]") {
  Loop loop;
  int a[2];
  int b[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a) == 0);
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b) == 0);
  REQUIRE(::write(a[1], "x", 1) == 1);  // both readable before they are watched: one batch
  REQUIRE(::write(b[1], "x", 1) == 1);
  struct Handler final : streamlock::detail::IoHandler {
    std::function<void()> ready;
    void onIo(std::uint32_t) override { ready(); }
  };
  Handler first;
  Handler second;
  Handler newcomer;
  std::atomic<int> newcomerCalls{0};
  std::promise<void> done;
  int victim = -1;
  int fresh = -1;
  // Whichever runs first closes the other's descriptor and opens one that takes its number.
  const auto takeOver = [&](int other) {
    if (victim >= 0) return;
    victim = other;
    loop.unwatch(other);
    ::close(other);
    fresh = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);  // the lowest free number: other's
    loop.watch(fresh, &newcomer, EPOLLIN);
    loop.at(Clock::now() + 50ms, [&done] { done.set_value(); });
  };
  char byte = 0;
  first.ready = [&] {
    takeOver(b[0]);
    (void)::read(a[0], &byte, 1);
  };
  second.ready = [&] {
    takeOver(a[0]);
    (void)::read(b[0], &byte, 1);
  };
  newcomer.ready = [&] { ++newcomerCalls; };
  loop.post([&] {
    loop.watch(a[0], &first, EPOLLIN);
    loop.watch(b[0], &second, EPOLLIN);
  });
  REQUIRE(done.get_future().wait_for(5s) == std::future_status::ready);
  loop.stop();
  REQUIRE(fresh == victim);  // the case this checks did arise
  CHECK(newcomerCalls == 0);
  for (const int fd : {a[1], b[1], fresh, victim == a[0] ? b[0] : a[0]}) ::close(fd);
}

TEST_CASE("a timer cancelled by another one due at the same time never runs", "[unit]") {
  Loop loop;
  std::atomic<int> cancelledRan{0};
  std::promise<void> done;
  loop.post([&] {
    const auto when = Clock::now() + 20ms;
    auto victim = std::make_shared<Loop::TimerId>(0);
    loop.at(when, [&loop, victim] { loop.cancel(*victim); });
    *victim = loop.at(when, [&] { ++cancelledRan; });
    loop.at(when + 30ms, [&] { done.set_value(); });
  });
  REQUIRE(done.get_future().wait_for(5s) == std::future_status::ready);
  CHECK(cancelledRan == 0);
  loop.stop();
}

TEST_CASE("a pooled connection cut silently while idle: the statement is sent once more on a fresh one") {
  test::TestDb db;
  test::CapturedLog log;
  test::FaultProxy proxy(std::stoi(realPort()));
  PgPool pool(poolOptions(1, conninfoOnPort(std::to_string(proxy.port()))), log.logger());
  const std::string firstPid(pool.execute("SELECT pg_backend_pid()").value(0, 0));

  proxy.cutSilently();
  REQUIRE(test::waitUntil(
      [&] { return db.number("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", {firstPid}) == 0; }));
  std::this_thread::sleep_for(50ms);
  CHECK(pool.stats().idle == 1);  // nothing told the pool: the client side is still open

  const auto start = Clock::now();
  const std::string secondPid(pool.execute("SELECT pg_backend_pid()").value(0, 0));
  CHECK(secondPid != firstPid);
  CHECK(proxy.accepted() == 2);
  CHECK(test::elapsedSince(start) < 2s);
}

// Stops the shared cluster: registered RUN_SERIAL (tests/CMakeLists.txt).
TEST_CASE("PostgreSQL restarted: calls fail fast while it is down and the first one after succeeds", "[pg-stop]") {
  test::CapturedLog log;
  PgPool pool(poolOptions(2), log.logger());
  Outcomes before(2);
  pool.execute("SELECT 1", {}, before.slot(0));
  pool.execute("SELECT 2", {}, before.slot(1));
  REQUIRE(before.waitAll(10s));
  REQUIRE(pool.execute("SELECT 1").value(0, 0) == "1");

  const std::string startCommand = test::requireEnv("STREAMLOCK_TEST_PG_START");
  struct Restart {
    const std::string& command;
    bool stopped = false;
    ~Restart() {
      if (stopped) runShell(command);
    }
  } restart{startCommand};
  restart.stopped = true;
  REQUIRE(runShell(test::requireEnv("STREAMLOCK_TEST_PG_STOP")) == 0);
  const auto downStart = Clock::now();
  const auto down = errorOf([&] { pool.execute("SELECT 1"); });
  const auto downElapsed = test::elapsedSince(downStart);
  REQUIRE(runShell(startCommand) == 0);  // pg_ctl -w: accepting connections when it returns
  restart.stopped = false;

  REQUIRE(down);
  CHECK((down->code() == ErrorCode::ConnectFailed || down->code() == ErrorCode::ConnectionLost));
  CHECK(downElapsed < 3s);
  CHECK(pool.execute("SELECT 'back'").value(0, 0) == "back");
}

TEST_CASE("multi-host: a first host that never answers costs one attempt, then is tried last") {
  const std::string form = GENERATE("keywords", "uri");
  CAPTURE(form);
  test::SilentListener hung;
  test::TestDb db;
  test::CapturedLog log;
  const std::string hungPort = std::to_string(hung.port());
  const std::string conninfo =
      form == "keywords"
          ? "host=127.0.0.1,127.0.0.1 port=" + hungPort + "," + realPort() +
                " dbname=streamlock_test user=postgres target_session_attrs=read-write"
          : "postgresql://127.0.0.1:" + hungPort + ",127.0.0.1:" + realPort() +
                "/streamlock_test?user=postgres&target_session_attrs=read-write";
  PgPool pool(poolOptions(2, conninfo), log.logger());

  auto start = Clock::now();
  const std::string pid(pool.execute("SELECT pg_backend_pid()").value(0, 0));
  const auto first = test::elapsedSince(start);
  CHECK(first >= 490ms);  // the hung host got its attempt
  CHECK(first < 1500ms);
  CHECK(log.contains("did not answer within 500 ms"));

  // The next connect goes to the answering host first.
  REQUIRE(db.scalar("SELECT pg_terminate_backend($1::int)", {pid}) == std::optional<std::string>("t"));
  REQUIRE(test::waitUntil([&] { return pool.stats().open == 0; }, 5s));  // the idle watch saw it go
  start = Clock::now();
  CHECK(pool.execute("SELECT 1").value(0, 0) == "1");
  CHECK(test::elapsedSince(start) < 400ms);
}

TEST_CASE("a host that never answers: the connect is bounded by connectTimeout, across hosts, and by notAfter") {
  test::SilentListener hung, hung2;
  test::CapturedLog log;
  const std::string port = std::to_string(hung.port());

  SECTION("one host: connectTimeout") {
    auto options = poolOptions(1, conninfoOnPort(port));
    options.connectTimeout = 300ms;
    PgPool pool(options, log.logger());
    const auto start = Clock::now();
    const auto error = errorOf([&] { pool.execute("SELECT 1"); });
    const auto elapsed = test::elapsedSince(start);
    REQUIRE(error);
    CHECK(error->code() == ErrorCode::Timeout);
    CHECK(elapsed >= 290ms);
    CHECK(elapsed < 1000ms);
  }
  SECTION("two hosts: each attempt bounded, the whole connect by connectTimeout") {
    auto options = poolOptions(1, "host=127.0.0.1,127.0.0.1 port=" + port + "," + std::to_string(hung2.port()) +
                                      " dbname=x user=x");
    options.connectTimeout = 800ms;
    options.hostAttemptTimeout = 300ms;
    PgPool pool(options, log.logger());
    const auto start = Clock::now();
    const auto error = errorOf([&] { pool.execute("SELECT 1"); });
    const auto elapsed = test::elapsedSince(start);
    REQUIRE(error);
    CHECK(error->code() == ErrorCode::Timeout);
    CHECK(elapsed >= 790ms);
    CHECK(elapsed < 1500ms);
  }
  SECTION("the loop-thread entry: one hard deadline over the pool wait, the connect and the statement") {
    WiredPool pool(poolOptions(1, conninfoOnPort(port)), log.logger(), 1);  // connectTimeout 2 s
    std::promise<std::thread::id> loopThread;
    pool.loop.post([&] { loopThread.set_value(std::this_thread::get_id()); });
    const auto loopId = loopThread.get_future().get();
    Outcomes outcomes(1);
    const auto start = Clock::now();
    auto limits = PgPoolAccess::limits(*pool, 1000ms, streamlock::detail::deadlineIn(300ms));
    PgPoolAccess::execute(*pool, "SELECT 1", {}, limits, outcomes.loopSlot(0));
    REQUIRE(outcomes.waitAll(5s));
    const Outcome outcome = outcomes.get(0);
    CHECK(outcome.code == ErrorCode::Timeout);
    CHECK(outcome.at - start >= 290ms);
    CHECK(outcome.at - start < 800ms);
    CHECK(outcome.thread == loopId);
  }
}

TEST_CASE("close() completes pending calls with ShutDown, exactly once") {
  test::TestDb db;
  test::CapturedLog log;
  Outcomes outcomes(5);
  PgPool pool(poolOptions(1), log.logger());
  const std::string tag = "pg_async_close_" + test::uniqueId();
  pool.execute("SELECT pg_sleep(5) /* " + tag + " */", {}, outcomes.slot(0));
  for (std::size_t i = 1; i < 4; ++i) pool.execute("SELECT 1", {}, outcomes.slot(i));
  REQUIRE(test::waitUntil([&] { return activeWith(db, tag) == 1; }));
  const auto start = Clock::now();
  pool.close();
  CHECK(test::elapsedSince(start) < 1s);
  pool.execute("SELECT 1", {}, outcomes.slot(4));
  REQUIRE(outcomes.waitAll(5s));
  std::this_thread::sleep_for(100ms);
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    CAPTURE(i);
    CHECK(outcomes.get(i).calls == 1);
    CHECK(outcomes.get(i).code == ErrorCode::ShutDown);
    CHECK_FALSE(outcomes.get(i).onCallerThread);
  }
  CHECK(pool.stats().open == 0);
  CHECK(test::waitUntil([&] { return activeWith(db, tag) == 0; }, 5s));
}

TEST_CASE("fork: a child that frees the pool does not end the parent's session") {
  const std::string kind = GENERATE("standalone", "wired");
  CAPTURE(kind);
  test::TestDb db;
  test::CapturedLog log;
  std::unique_ptr<PgPool> standalone;
  std::unique_ptr<WiredPool> wired;
  PgPool* pool = nullptr;
  if (kind == "standalone") {
    standalone = std::make_unique<PgPool>(poolOptions(1), log.logger());
    pool = standalone.get();
  } else {
    wired = std::make_unique<WiredPool>(poolOptions(1), log.logger(), 1);
    pool = wired->pool.get();
  }
  const std::string pid(pool->execute("SELECT pg_backend_pid()").value(0, 0));

  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    if (standalone) {
      standalone.reset();  // the destructor finds another pid: memory only
    } else {
      PgPoolAccess::abandonAfterFork(*wired->pool);
      wired->pool.reset();
    }
    ::_exit(0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::this_thread::sleep_for(200ms);  // a Terminate from the child would have ended it by now
  CHECK(db.number("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", {pid}) == 1);
  CHECK(pool->execute("SELECT pg_backend_pid()").value(0, 0) == pid);
}

TEST_CASE("the blocking form refuses to run on the I/O thread") {
  test::CapturedLog log;
  WiredPool pool(poolOptions(1), log.logger(), 1);
  std::promise<std::optional<ErrorCode>> code;
  pool.loop.post([&] {
    try {
      pool->execute("SELECT 1");
      code.set_value(std::nullopt);
    } catch (const Error& e) {
      code.set_value(e.code());
    }
  });
  CHECK(code.get_future().get() == ErrorCode::InvalidArgument);
}

TEST_CASE("stats: open, inUse, idle and capacity") {
  test::TestDb db;
  test::CapturedLog log;
  PgPool pool(poolOptions(3), log.logger());
  CHECK(pool.stats().open == 0);
  CHECK(pool.stats().capacity == 3);
  pool.execute("SELECT 1");
  CHECK(pool.stats().open == 1);
  CHECK(pool.stats().idle == 1);
  CHECK(pool.stats().inUse == 0);
  Outcomes outcomes(1);
  const std::string tag = "pg_async_stats_" + test::uniqueId();
  pool.execute("SELECT pg_sleep(0.5) /* " + tag + " */", {}, outcomes.slot(0));
  CHECK(test::waitUntil([&] { return pool.stats().inUse == 1 && pool.stats().idle == 0; }));
  REQUIRE(outcomes.waitAll(5s));
  CHECK(pool.stats().inUse == 0);
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("options: non-positive durations and mismatched host lists are refused", "[unit]") {
  test::CapturedLog log;
  PostgresOptions options;
  options.conninfo = "host=127.0.0.1 port=1 dbname=x";
  auto refused = [&](PostgresOptions bad, const std::string& name) {
    const auto error = errorOf([&] { PgPool pool(std::move(bad), log.logger()); });
    REQUIRE(error);
    CHECK(error->code() == ErrorCode::InvalidArgument);
    CHECK(std::string(error->what()).find(name) != std::string::npos);
  };
  auto bad = options;
  bad.connectTimeout = 0ms;
  refused(bad, "connectTimeout");
  bad = options;
  bad.hostAttemptTimeout = -1ms;
  refused(bad, "hostAttemptTimeout");
  bad = options;
  bad.statementTimeout = 0ms;
  refused(bad, "statementTimeout");
  bad = options;
  bad.acquireTimeout = -5ms;
  refused(bad, "acquireTimeout");
  bad = options;
  bad.conninfo = "host=a,b,c port=1,2 dbname=x";
  refused(bad, "port numbers");
}

TEST_CASE("huge durations saturate instead of overflowing") {
  test::CapturedLog log;
  auto options = poolOptions(1);
  options.acquireTimeout = streamlock::Milliseconds::max();
  options.connectTimeout = streamlock::Milliseconds::max();
  options.hostAttemptTimeout = streamlock::Milliseconds::max();
  options.statementTimeout = streamlock::Milliseconds::max();
  PgPool pool(options, log.logger());
  CHECK(pool.execute("SELECT 1").value(0, 0) == "1");
  CHECK(pool.execute("SELECT 2", {}, streamlock::Milliseconds::max()).value(0, 0) == "2");
  Outcomes outcomes(1);
  pool.execute("SELECT 3", {}, outcomes.slot(0), streamlock::Milliseconds::max());
  REQUIRE(outcomes.waitAll(10s));
  CHECK(outcomes.get(0).value == "3");
}

TEST_CASE("a multi-host conninfo is split into one set of keywords per host", "[unit]") {
  using streamlock::detail::PgTargets;
  const auto value = [](const PgTargets::Keywords& keywords, const std::string& key) -> std::optional<std::string> {
    for (const auto& [k, v] : keywords) {
      if (k == key) return v;
    }
    return std::nullopt;
  };
  PostgresOptions options;
  options.conninfo =
      "host=a,,c port=5001,5002,5003 dbname=db user=u connect_timeout=10 target_session_attrs=read-write "
      "options='-c search_path=s'";
  options.settings = {{"lock_timeout", "100ms"}};
  PgTargets targets(options);
  REQUIRE(targets.size() == 3);
  CHECK(value(targets.keywords(0), "host") == std::optional<std::string>("a"));
  CHECK(value(targets.keywords(0), "port") == std::optional<std::string>("5001"));
  CHECK(value(targets.keywords(1), "host") == std::nullopt);  // an empty element: libpq's default
  CHECK(value(targets.keywords(1), "port") == std::optional<std::string>("5002"));
  CHECK(value(targets.keywords(2), "host") == std::optional<std::string>("c"));
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(value(targets.keywords(i), "connect_timeout") == std::nullopt);
    CHECK(value(targets.keywords(i), "target_session_attrs") == std::optional<std::string>("read-write"));
    CHECK(value(targets.keywords(i), "options") == std::optional<std::string>("-c search_path=s -c lock_timeout=100ms"));
  }
  CHECK(targets.label(0) == "a:5001");

  const auto now = std::chrono::steady_clock::now();
  CHECK(targets.order(now) == std::vector<std::size_t>{0, 1, 2});
  targets.demote(0, now + 30s);
  CHECK(targets.order(now) == std::vector<std::size_t>{1, 2, 0});
  CHECK(targets.order(now + 31s) == std::vector<std::size_t>{0, 1, 2});

  options.conninfo = "postgresql://h1:1,h2:2/db?user=u";
  PgTargets uri(options);
  REQUIRE(uri.size() == 2);
  CHECK(uri.label(1) == "h2:2");
  options.conninfo = "host=h1,h2 port=7";  // one port for every host
  PgTargets onePort(options);
  REQUIRE(onePort.size() == 2);
  CHECK(value(onePort.keywords(1), "port") == std::optional<std::string>("7"));
}
