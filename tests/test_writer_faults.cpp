// The writer lifecycle under races and faults that an adversarial review found failing: the Client
// destroyed on its own I/O thread, a WAIT on a hung server, a release racing shutdown(), a moved-from
// lock, an overflowing option.
#define CATCH_CONFIG_ENABLE_ALL_STRINGMAKERS
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "acquired.h"
#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "net_faults.h"
#include "redis_client.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "streamlock/error.h"
#include "watchdog.h"

using streamlock::AcquireResult;
using streamlock::Client;
using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::LookupStatus;
using streamlock::Milliseconds;
using streamlock::Options;
using streamlock::ReleaseOutcome;
using streamlock::StreamLock;
using Clock = std::chrono::steady_clock;
using Value = std::optional<std::string>;
using namespace std::chrono_literals;
namespace test = streamlock::test;
using streamlock::test::threadsWithoutClient;
using streamlock::test::Acquired;
using streamlock::test::acquire;
using streamlock::test::Watchdog;

// The ownership-lost callback may own the Client (it captures the shared_ptr it calls release() or
// shutdown() through). Once the application let go of its own references, the library's copy of
// the callback is the Client's last owner; the library must not drop it on its I/O thread, where
// ~Client cannot shut the loop down (a self-join, or the loop freed under its own feet).
namespace {

// A host's loop: one thread that runs what the executor queued, in order.
class HostThread {
 public:
  HostThread() : thread_([this] { run(); }) {}
  ~HostThread() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    ready_.notify_all();
    thread_.join();
  }
  streamlock::Executor executor() {
    return [this](std::function<void()> task) {
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        tasks_.push_back(std::move(task));
      }
      ready_.notify_one();
    };
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ready_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      task = nullptr;
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE("a Client owned only by a stopped heartbeat's callback is destroyed safely") {
  const Watchdog watchdog("Client owned by the callback", 60s);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = std::chrono::seconds{2};
  options.lock.heartbeatInterval = 100ms;
  std::optional<HostThread> host;
  SECTION("without an executor") {}
  SECTION("with Options::executor") {
    host.emplace();
    options.executor = host->executor();
  }
  const auto threadsBefore = threadsWithoutClient();
  auto client = std::make_shared<Client>(options);
  const std::weak_ptr<Client> weak = client;

  auto lock = client->acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  {
    auto heartbeat = lock->startHeartbeat([client](const std::string&, const std::string&) { client->shutdown(); });
    REQUIRE(test::waitUntil([&] { return client->counters().heartbeatsExtended >= 1; }, 10s, 1ms));
  }  // stopped: the I/O thread drops its entry (and the callback) at its next tick
  lock.reset();
  client.reset();  // the callback is now the Client's only owner

  CHECK(test::waitUntil([&] { return weak.expired(); }, 10s));
  CHECK(test::waitUntil([&] { return test::threadCount() <= threadsBefore; }, 10s));
}

// "Blocks at most waitFor + redis.commandTimeout": with lock.waitReplicas the SET is followed by a
// WAIT on the same connection. Redis answers the SET, then hangs (SIGSTOP) while the WAIT waits for
// replicas: the acquire must still give up by its deadline, and leave no lock behind.
TEST_CASE("an acquire with waitReplicas gives up by its deadline while Redis hangs during the WAIT") {
  const Watchdog watchdog("WAIT hangs", 60s);
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.redis.commandTimeout = 1000ms;
  options.lock.waitReplicas = 1;  // the server has none: the WAIT blocks in the server
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified; }));

  const auto start = Clock::now();
  auto pending = std::async(std::launch::async, [&] { return acquire(client, "chat-1", "stream-1"); });
  // The SET was answered and the WAIT is blocked in the server: hang the server there.
  const bool waiting =
      test::waitUntil([&] { return admin.infoField("clients", "blocked_clients") >= 1; }, 5s, 1ms);
  server.pause();
  const bool returned = pending.wait_for(options.redis.commandTimeout + 1000ms) == std::future_status::ready;
  const auto returnedAfter = test::elapsedSince(start);
  server.resume();
  const Acquired got = pending.get();

  REQUIRE(waiting);
  INFO("the acquire " << (returned ? "returned " : "was still blocked ") << "after " << returnedAfter.count()
                      << " ms (commandTimeout 1000 ms); it gave " << got.describe());
  CHECK(returned);
  CHECK(got.error.has_value());
  // Too few replicas: its lock is deleted again.
  CHECK(test::waitUntil([&] { return !admin.exists(key); }, 3s));
}

// An extend that timed out against a hung Redis still sits in its socket. When the server comes back
// before the lock expired, it runs and pushes the expiry out by a whole TTL, for a stream that was
// told it lost the lock and stopped. The lock must not outlive the loss report by that TTL.
TEST_CASE("a lock whose loss was reported is deleted, even when an extend sent before runs late") {
  const Watchdog watchdog("late extend", 60s);
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 3s;  // interval 1 s, commandTimeout 1 s: the loss is reported 2 s after the last extend was sent
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");
  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  auto heartbeat = lock->startHeartbeat();
  REQUIRE(test::waitUntil([&] { return client.counters().heartbeatsExtended >= 1; }, 10s, 1ms));
  server.pause();  // the next extends go out and wait in the hung server
  REQUIRE(test::waitUntil([&] { return heartbeat.ownershipLost(); }, 5s, 1ms));
  server.resume();  // before the lock expired (3 s after the last extend ran): the late extends run
  const auto resumedAt = Clock::now();

  // Not gone by itself before resume + 3 s (the TTL a late extend gave it).
  const bool deleted = test::waitUntil([&] { return !admin.exists(key); }, 2s, 10ms);
  INFO("the lock " << (deleted ? "was deleted " : "was still there ") << test::elapsedSince(resumedAt).count()
                   << " ms after Redis came back");
  CHECK(deleted);
}

// "done is called exactly once, never inside the call that started it": also for a StreamLock that
// was moved from (it answers AlreadyReleased).
TEST_CASE("release(done) of a moved-from StreamLock does not call done inside the call") {
  const Watchdog watchdog("moved-from release", 60s);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  Client client(options);
  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  StreamLock taken = std::move(*lock);

  // Called inside the call: on this thread (the completion thread is another one).
  const auto caller = std::this_thread::get_id();
  auto outcome = std::make_shared<std::promise<std::pair<ReleaseOutcome, bool>>>();
  lock->release([caller, outcome](ReleaseOutcome released) {
    outcome->set_value({released, std::this_thread::get_id() != caller});
  });
  auto future = outcome->get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  const auto [released, elsewhere] = future.get();
  CHECK(released == ReleaseOutcome::AlreadyReleased);
  INFO("done was called " << (elsewhere ? "on the callback thread" : "inline, inside the release(done) call"));
  CHECK(elsewhere);
  CHECK(taken.release() == ReleaseOutcome::Released);
}

// "Shutting the library object down ... releases the locks it still holds": a release handed to
// the I/O thread just before shutdown() must still delete the lock (by itself, or by the shutdown's
// pipeline); the shutdown must not close the connection under it. Several rounds: the release and
// the shutdown reach the I/O thread together in most of them.
TEST_CASE("a release started just before shutdown() still deletes the lock") {
  const Watchdog watchdog("release then shutdown", 120s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  auto options = test::clientOptions(test::redisUrl(), log);
  int leftBehind = 0;
  int failed = 0;
  constexpr int rounds = 20;
  for (int round = 0; round < rounds; ++round) {
    Client client(options);
    const std::string chat = "chat-" + std::to_string(round);
    auto lock = client.acquireStreamLock(chat, "stream-1");
    REQUIRE(lock);
    auto outcome = std::make_shared<std::promise<ReleaseOutcome>>();
    lock->release([outcome](ReleaseOutcome released) { outcome->set_value(released); });
    client.shutdown();
    auto future = outcome->get_future();
    REQUIRE(future.wait_for(5s) == std::future_status::ready);
    const ReleaseOutcome released = future.get();
    // AlreadyReleased: the shutdown got there first and deleted it in its pipeline.
    if (released == ReleaseOutcome::Failed || released == ReleaseOutcome::NotOwner) ++failed;
    if (redis.exists(test::lockKey(options, chat))) ++leftBehind;
  }
  INFO("of " << rounds << " rounds: " << leftBehind << " left the lock in Redis; " << failed
             << " reported Failed or NotOwner");
  CHECK(leftBehind == 0);
  CHECK(failed == 0);
}

// "A value so large that now() + value overflows is refused by the constructor with InvalidArgument
// naming the option": postgres.hostAttemptTimeout too (every other duration is checked).
TEST_CASE("the Client refuses an overflowing postgres.hostAttemptTimeout, naming it") {
  test::CapturedLog log;
  auto options = test::clientOptions("", log);
  options.postgres.conninfo = test::databaseUrl();
  for (const Milliseconds bad : {Milliseconds::max(), Milliseconds{std::chrono::hours{25}}}) {
    INFO("postgres.hostAttemptTimeout = " << bad.count() << " ms");
    options.postgres.hostAttemptTimeout = bad;
    std::optional<Error> refused;
    try {
      const Client client(options);
    } catch (const Error& error) {
      refused = error;
    }
    REQUIRE(refused.has_value());
    CHECK(refused->code() == ErrorCode::InvalidArgument);
    CHECK_THAT(refused->what(), Catch::Matchers::Contains("postgres.hostAttemptTimeout"));
  }
}

// writeMarker / clearMarker: "Blocks at most postgres.acquireTimeout + connectTimeout +
// statementTimeout", connecting included, against a PostgreSQL that accepts TCP and never answers;
// the completion forms within the same bound, never inside the call.
TEST_CASE("writeMarker and clearMarker keep their bound while PostgreSQL accepts TCP and never answers") {
  const Watchdog watchdog("markers against a silent PostgreSQL", 60s);
  test::SilentListener postgres(test::SilentListener::Mode::Accept);
  test::CapturedLog log;
  auto options = test::clientOptions("", log);
  options.postgres.conninfo = "postgresql://postgres@127.0.0.1:" + std::to_string(postgres.port()) + "/streamlock_test";
  options.postgres.connectTimeout = 300ms;
  options.postgres.hostAttemptTimeout = 300ms;
  options.postgres.statementTimeout = 300ms;
  options.postgres.acquireTimeout = 300ms;
  const auto bound = 900ms + 400ms;  // plus scheduling on a busy machine
  Client client(options);
  const std::string chat = "00000000-0000-0000-0000-000000000001";

  for (int round = 0; round < 2; ++round) {
    INFO("round " << round);
    auto start = Clock::now();
    std::optional<ErrorCode> writeError;
    try {
      (void)client.writeMarker(chat, "stream-1");
    } catch (const Error& error) {
      writeError = error.code();
    }
    const auto writeTook = test::elapsedSince(start);
    start = Clock::now();
    const auto caller = std::this_thread::get_id();
    auto finished = std::make_shared<std::promise<std::pair<bool, bool>>>();
    client.clearMarker(chat, "stream-1", [caller, finished](streamlock::Result<bool> changed) {
      finished->set_value({changed.ok(), std::this_thread::get_id() != caller});
    });
    auto future = finished->get_future();
    const bool completed = future.wait_for(5s) == std::future_status::ready;
    const auto clearTook = test::elapsedSince(start);
    INFO("writeMarker took " << writeTook.count() << " ms, clearMarker(done) " << clearTook.count() << " ms");
    CHECK(writeError.has_value());
    CHECK(writeTook <= bound);
    REQUIRE(completed);
    const auto [ok, elsewhere] = future.get();
    CHECK_FALSE(ok);
    CHECK(elsewhere);
    CHECK(clearTook <= bound);
  }
}

// "Callbacks may call anything": with an executor that runs completions inline (on the library's
// I/O thread, as an event-loop host that trusts them may do), shutdown() called from a completion
// runs on the I/O thread. It cannot wait there, but it must still release the locks the Client
// holds, call every pending completion, and leave a Client that its owner destroys safely.
TEST_CASE("shutdown() from a completion run on the I/O thread releases the locks and completes what is pending") {
  const Watchdog watchdog("shutdown on the I/O thread", 60s);
  test::RedisServerProcess hung;  // a second Redis, paused: a lookup on it stays pending
  test::TestRedis admin(test::redisUrl());
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.postgres.conninfo = test::databaseUrl();
  options.executor = [](std::function<void()> task) { task(); };  // inline, on the I/O thread
  auto hungOptions = test::clientOptions(hung.url(), log);
  hungOptions.redis.lookupDeadline = 10s;  // pending until shutdown, not until the deadline
  hungOptions.breaker.failureThreshold = 0;
  hungOptions.postgres.conninfo = test::databaseUrl();
  hungOptions.executor = options.executor;

  SECTION("the locks it holds are released") {
    std::optional<Client> client(std::in_place, options);
    const auto key = test::lockKey(options, "chat-1");
    auto lock = client->acquireStreamLock("chat-1", "stream-1");
    REQUIRE(lock.has_value());
    REQUIRE(admin.exists(key));
    std::promise<std::thread::id> ran;
    client->postgres()->execute("SELECT 1", {}, [&](streamlock::Result<streamlock::PgResult>) {
      client->shutdown();
      ran.set_value(std::this_thread::get_id());
    });
    auto future = ran.get_future();
    REQUIRE(future.wait_for(10s) == std::future_status::ready);
    CHECK(future.get() != std::this_thread::get_id());
    CHECK(test::waitUntil([&] { return !admin.exists(key); }, 3s));
    // Calls after it complete at once (on the executor, so here: inline).
    bool after = false;
    client->getActiveChatStreamIds({"chat-2"}, [&](streamlock::ActiveStreams result) {
      after = result.status == LookupStatus::Unknown;
    });
    CHECK(after);
    client.reset();  // its owner destroys it: joins nothing that is gone, frees nothing in use
    (void)lock->release();
  }
  SECTION("a completion pending on a hung Redis is called") {
    std::optional<Client> client(std::in_place, hungOptions);
    REQUIRE(client->getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified);
    hung.pause();
    std::atomic<bool> pendingDone{false};
    const auto start = Clock::now();
    client->getActiveChatStreamIds({"chat-1"}, [&](streamlock::ActiveStreams) { pendingDone = true; });
    std::atomic<bool> shutDown{false};
    client->postgres()->execute("SELECT 1", {}, [&](streamlock::Result<streamlock::PgResult>) {
      client->shutdown();
      shutDown = true;
    });
    REQUIRE(test::waitUntil([&] { return shutDown.load(); }, 10s));
    const bool called = test::waitUntil([&] { return pendingDone.load(); }, 3s);
    INFO("the pending lookup " << (called ? "was called after " : "was still pending after ")
                               << test::elapsedSince(start).count() << " ms (its deadline: 10 s)");
    CHECK(called);
    hung.resume();
    client.reset();
  }
}
