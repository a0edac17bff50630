// The writer's lock: SET NX EX, a heartbeat that extends it only while it is ours, ownership loss,
// compare-and-delete release, the pending map as the lock without Redis, and shutdown.
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "redis_client.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "streamlock/error.h"

using streamlock::Client;
using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::ReleaseOutcome;
using streamlock::StreamLock;
using Value = std::optional<std::string>;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

// Records the ownership-loss callbacks; assertions read it on the main thread.
class LostCalls {
 public:
  streamlock::OwnershipLostCallback callback(std::function<void()> alsoDo = {}) {
    return [this, alsoDo = std::move(alsoDo)](const std::string& chat, const std::string& stream) {
      if (alsoDo) alsoDo();  // before recording: a test that saw the call may read what it did
      const std::lock_guard<std::mutex> lock(mutex_);
      calls_.emplace_back(chat, stream);
    };
  }
  std::vector<std::pair<std::string, std::string>> calls() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }
  std::size_t count() const { return calls().size(); }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> calls_;
};

using Calls = std::vector<std::pair<std::string, std::string>>;

ErrorCode acquireError(Client& client, const std::string& chat, const std::string& stream) {
  try {
    static_cast<void>(client.acquireStreamLock(chat, stream));
  } catch (const Error& error) {
    return error.code();
  }
  FAIL("acquireStreamLock did not throw");
  return ErrorCode::InvalidArgument;
}

}  // namespace

TEST_CASE("acquire: SET NX EX with the stream id, recorded in the pending map") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  CHECK(lock->chatId() == "chat-1");
  CHECK(lock->streamId() == "stream-1");
  CHECK(redis.get(test::lockKey(options, "chat-1")) == Value("stream-1"));
  const auto pttl = redis.pttl(test::lockKey(options, "chat-1"));
  CHECK(pttl > 30000);  // EX 60 by default
  CHECK(pttl <= 60000);
  CHECK(client.pendingStreams().owner("chat-1") == Value("stream-1"));
  CHECK(client.counters().locksAcquired == 1);
}

TEST_CASE("acquire: the TTL comes from LockOptions") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = 7s;
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  const auto pttl = redis.pttl(test::lockKey(options, "chat-1"));
  CHECK(pttl > 0);
  CHECK(pttl <= 7000);
}

TEST_CASE("acquire: an empty chat or stream id is an invalid argument") {
  test::CapturedLog log;
  Client client(test::clientOptions(test::redisUrl(), log));
  CHECK(acquireError(client, "", "stream-1") == ErrorCode::InvalidArgument);
  CHECK(acquireError(client, "chat-1", "") == ErrorCode::InvalidArgument);
  CHECK(client.pendingStreams().size() == 0);
}

TEST_CASE("contention: a second stream gets nullopt and the first lock stays") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client first(options);
  Client second(options);  // another process sharing the Redis
  auto held = first.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(held);

  SECTION("from another Client") {
    CHECK_FALSE(second.acquireStreamLock("chat-1", "stream-2"));
    CHECK_FALSE(second.pendingStreams().owner("chat-1"));
  }
  SECTION("from the same Client") {
    CHECK_FALSE(first.acquireStreamLock("chat-1", "stream-2"));
    CHECK(first.pendingStreams().owner("chat-1") == Value("stream-1"));
  }
  CHECK(redis.get(test::lockKey(options, "chat-1")) == Value("stream-1"));
  CHECK(second.acquireStreamLock("chat-2", "stream-2"));  // another chat is free
}

TEST_CASE("acquire waits for a release by another holder") {
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.acquirePollInterval = 20ms;
  Client holder(options);
  Client waiter(options);
  auto held = holder.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(held);

  const auto callsBefore = redis.callsExceptInfo();
  auto releaser = std::async(std::launch::async, [&] {
    // Release once the waiter has tried at least twice.
    test::TestRedis observer(server.url());
    const bool sawAttempts = test::waitUntil([&] { return observer.callsExceptInfo() >= callsBefore + 2; });
    return std::make_pair(sawAttempts, held->release());
  });
  const auto start = std::chrono::steady_clock::now();
  auto acquired = waiter.acquireStreamLock("chat-1", "stream-2", 20s);
  const auto elapsed = test::elapsedSince(start);
  const auto [sawAttempts, released] = releaser.get();

  CHECK(sawAttempts);
  CHECK(released == ReleaseOutcome::Released);
  REQUIRE(acquired);
  CHECK(acquired->streamId() == "stream-2");
  CHECK(elapsed < 15s);  // woken by the release, not by waitFor
  CHECK(redis.get(test::lockKey(options, "chat-1")) == Value("stream-2"));
}

TEST_CASE("acquire gives up after waitFor while another stream holds the lock") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client holder(options);
  Client waiter(options);
  auto held = holder.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(held);

  const auto start = std::chrono::steady_clock::now();
  const auto acquired = waiter.acquireStreamLock("chat-1", "stream-2", 200ms);
  const auto elapsed = test::elapsedSince(start);
  CHECK_FALSE(acquired);
  CHECK(elapsed >= 200ms);
  CHECK(elapsed < 5s);  // no hang
  CHECK(redis.get(test::lockKey(options, "chat-1")) == Value("stream-1"));
  CHECK_FALSE(waiter.pendingStreams().owner("chat-1"));
}

TEST_CASE("acquire with Redis configured but unreachable throws and records nothing") {
  test::CapturedLog log;
  SECTION("refused") {
    Client client(test::clientOptions("redis://127.0.0.1:" + std::to_string(test::closedPort()) + "/0", log));
    const auto start = std::chrono::steady_clock::now();
    CHECK(acquireError(client, "chat-1", "stream-1") == ErrorCode::ConnectFailed);
    CHECK(test::elapsedSince(start) < 5s);
    CHECK(client.pendingStreams().size() == 0);
  }
  SECTION("hung (SIGSTOP)") {
    test::RedisServerProcess server;
    auto options = test::clientOptions(server.url(), log);
    options.redis.commandTimeout = 300ms;
    Client client(options);
    server.pause();
    const auto start = std::chrono::steady_clock::now();
    const auto code = acquireError(client, "chat-1", "stream-1");
    const auto elapsed = test::elapsedSince(start);
    server.resume();
    CHECK(code == ErrorCode::Timeout);
    CHECK(elapsed < 5s);
    CHECK(client.pendingStreams().size() == 0);
  }
}

TEST_CASE("heartbeat: extends the TTL and keeps the lock past it") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = 2s;
  options.lock.heartbeatInterval = 200ms;
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  const auto acquiredAt = std::chrono::steady_clock::now();
  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  auto heartbeat = lock->startHeartbeat();
  CHECK(heartbeat.running());

  // The PTTL falls between extensions and rises again at each one.
  long long lowest = redis.pttl(key);
  const bool rose = test::waitUntil(
      [&] {
        const auto pttl = redis.pttl(key);
        if (pttl > lowest + 50) return true;
        lowest = std::min(lowest, pttl);
        return false;
      },
      10s, 10ms);
  CHECK(rose);

  // Waiting for the TTL to pass is waiting for time itself.
  std::this_thread::sleep_until(acquiredAt + options.lock.ttl + 1s);
  CHECK(redis.get(key) == Value("stream-1"));
  CHECK(redis.pttl(key) > 0);
  CHECK(heartbeat.running());
  CHECK_FALSE(heartbeat.ownershipLost());
  CHECK(client.counters().heartbeatsExtended >= 2);
  CHECK(client.counters().heartbeatsLost == 0);
}

TEST_CASE("heartbeat: ownership lost when the key is deleted") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = 2s;
  options.lock.heartbeatInterval = 100ms;
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  // The callback runs without an internal lock held: it may release.
  std::optional<ReleaseOutcome> releasedInCallback;
  LostCalls lost;
  auto heartbeat = lock->startHeartbeat(lost.callback([&] { releasedInCallback = lock->release(); }));
  REQUIRE(test::waitUntil([&] { return client.counters().heartbeatsExtended >= 1; }));

  redis.del(key);
  CHECK(test::waitUntil([&] { return heartbeat.ownershipLost() && lost.count() >= 1; }));
  // A few more intervals: a stopped heartbeat neither calls again nor recreates the key.
  std::this_thread::sleep_for(5 * options.lock.heartbeatInterval);
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
  CHECK_FALSE(heartbeat.running());
  CHECK(client.counters().heartbeatsLost == 1);
  CHECK_FALSE(redis.exists(key));
  CHECK(releasedInCallback == ReleaseOutcome::NotOwner);
  CHECK_FALSE(client.pendingStreams().owner("chat-1"));
}

TEST_CASE("heartbeat: ownership lost when another owner overwrote the key") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = 2s;
  options.lock.heartbeatInterval = 100ms;
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LostCalls lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  redis.set(key, "stream-intruder");
  redis.ok({"PEXPIRE", key, "60000"});

  CHECK(test::waitUntil([&] { return heartbeat.ownershipLost() && lost.count() >= 1; }));
  std::this_thread::sleep_for(5 * options.lock.heartbeatInterval);
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
  CHECK_FALSE(heartbeat.running());
  CHECK(client.counters().heartbeatsLost == 1);
  CHECK(redis.pttl(key) > 55000);  // the intruder's TTL, not extended to ours
  CHECK(lock->release() == ReleaseOutcome::NotOwner);
  CHECK(redis.get(key) == Value("stream-intruder"));
}

TEST_CASE("heartbeat: an error is retried at the next tick and ownership is kept") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 3s;
  options.lock.heartbeatInterval = 500ms;
  options.redis.commandTimeout = 200ms;
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LostCalls lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  REQUIRE(test::waitUntil([&] { return client.counters().heartbeatsExtended >= 1; }));

  server.pause();  // shorter than the TTL: resumed as soon as one extend has failed
  const bool failed = test::waitUntil([&] { return client.counters().heartbeatsFailed >= 1; });
  server.resume();
  const auto extendedAtResume = client.counters().heartbeatsExtended;
  const bool extendedAgain =
      test::waitUntil([&] { return client.counters().heartbeatsExtended > extendedAtResume; });

  CHECK(failed);
  CHECK(extendedAgain);
  CHECK_FALSE(heartbeat.ownershipLost());
  CHECK(heartbeat.running());
  CHECK(lost.count() == 0);
  CHECK(test::TestRedis(server.url()).get(test::lockKey(options, "chat-1")) == Value("stream-1"));
}

TEST_CASE("heartbeat: a whole TTL without a successful extend reports ownership lost") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 1s;
  options.lock.heartbeatInterval = 200ms;
  options.redis.commandTimeout = 100ms;
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LostCalls lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  server.pause();
  const bool reported = test::waitUntil([&] { return heartbeat.ownershipLost() && lost.count() >= 1; });
  server.resume();
  CHECK(reported);
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
  CHECK(client.counters().heartbeatsLost == 1);
  CHECK(client.counters().heartbeatsFailed >= 1);
}

TEST_CASE("heartbeat: stop and release end it without a loss") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.heartbeatInterval = 50ms;
  Client client(options);
  LostCalls lost;

  auto first = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(first);
  auto stopped = first->startHeartbeat(lost.callback());
  stopped.stop();
  CHECK_FALSE(stopped.running());

  auto second = client.acquireStreamLock("chat-2", "stream-2");
  REQUIRE(second);
  auto released = second->startHeartbeat(lost.callback());
  CHECK(second->release() == ReleaseOutcome::Released);
  CHECK(test::waitUntil([&] { return !released.running(); }));

  std::this_thread::sleep_for(5 * options.lock.heartbeatInterval);
  CHECK_FALSE(stopped.ownershipLost());
  CHECK_FALSE(released.ownershipLost());
  CHECK(lost.count() == 0);
  CHECK(client.counters().heartbeatsLost == 0);
}

TEST_CASE("release: compare-and-delete leaves another stream's value alone") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  redis.set(key, "stream-other");  // our lock expired and another stream took the chat
  CHECK(lock->release() == ReleaseOutcome::NotOwner);
  CHECK(redis.get(key) == Value("stream-other"));
  CHECK_FALSE(client.pendingStreams().owner("chat-1"));
  CHECK(client.counters().locksReleased == 0);
}

TEST_CASE("release: deletes our value once and is idempotent") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  CHECK(lock->release() == ReleaseOutcome::Released);
  CHECK_FALSE(redis.exists(key));
  CHECK_FALSE(client.pendingStreams().owner("chat-1"));
  CHECK(lock->release() == ReleaseOutcome::AlreadyReleased);
  CHECK(client.counters().locksReleased == 1);

  // Released for good: a new stream of this chat holds its own lock, and the old handle's
  // destructor leaves it alone.
  auto next = client.acquireStreamLock("chat-1", "stream-2");
  REQUIRE(next);
  lock.reset();
  CHECK(redis.get(key) == Value("stream-2"));
}

TEST_CASE("acquire right after the server closed the pooled connection still takes the lock") {
  // The lock operations have no retry, so they must not skip the idle check of a connection that
  // was given back moments ago (the lookups and PgPool may: they retry on a fresh connection).
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  const auto options = test::clientOptions(server.url(), log);
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  auto first = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(first);
  REQUIRE(first->release() == ReleaseOutcome::Released);
  REQUIRE(admin.integer({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}) >= 1);

  auto second = client.acquireStreamLock("chat-1", "stream-2");
  REQUIRE(second);
  CHECK(admin.get(key) == Value("stream-2"));
  CHECK(second->release() == ReleaseOutcome::Released);
  CHECK_FALSE(admin.exists(key));
}

TEST_CASE("release: on destruction, and a moved-from lock releases nothing") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  const auto key = test::lockKey(options, "chat-1");

  auto acquired = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(acquired);
  {
    StreamLock moved = std::move(*acquired);
    acquired.reset();  // destroys the moved-from lock
    CHECK(redis.get(key) == Value("stream-1"));
    CHECK(moved.streamId() == "stream-1");
  }
  // The destructor hands the release to the I/O thread and returns at once.
  CHECK(test::waitUntil([&] { return !redis.exists(key); }));
  CHECK(test::waitUntil([&] { return !client.pendingStreams().owner("chat-1"); }));
}

TEST_CASE("without Redis configured the pending map is the lock") {
  test::CapturedLog log;
  Client client(test::clientOptions("", log));

  auto first = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(first);
  CHECK(client.pendingStreams().owner("chat-1") == Value("stream-1"));
  CHECK_FALSE(client.acquireStreamLock("chat-1", "stream-2"));
  auto heartbeat = first->startHeartbeat();
  CHECK_FALSE(heartbeat.ownershipLost());

  auto releaser = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(50ms);  // a head start for the waiter; the outcome does not depend on it
    return first->release();
  });
  auto second = client.acquireStreamLock("chat-1", "stream-2", 20s);
  CHECK(releaser.get() == ReleaseOutcome::Released);
  REQUIRE(second);
  CHECK(client.pendingStreams().owner("chat-1") == Value("stream-2"));
  CHECK(second->release() == ReleaseOutcome::Released);
  CHECK(client.pendingStreams().size() == 0);
  CHECK_FALSE(heartbeat.ownershipLost());
}

TEST_CASE("Client::shutdown releases the locks it holds") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.heartbeatInterval = 50ms;
  test::TestRedis redis(test::redisUrl());
  Client client(options);

  std::vector<StreamLock> locks;
  std::vector<streamlock::Heartbeat> heartbeats;
  for (const auto* chat : {"chat-1", "chat-2", "chat-3"}) {
    auto lock = client.acquireStreamLock(chat, std::string("stream-of-") + chat);
    REQUIRE(lock);
    heartbeats.push_back(lock->startHeartbeat());
    locks.push_back(std::move(*lock));
  }
  REQUIRE(redis.keys(options.lock.keyPrefix + "*").size() == 3);

  client.shutdown();
  CHECK(redis.keys(options.lock.keyPrefix + "*").empty());
  for (auto& heartbeat : heartbeats) CHECK_FALSE(heartbeat.running());
  for (auto& lock : locks) CHECK(lock.release() == ReleaseOutcome::AlreadyReleased);
  CHECK(acquireError(client, "chat-4", "stream-4") == ErrorCode::ShutDown);
  CHECK(client.getActiveChatStreamIds({"chat-1"}).status == streamlock::LookupStatus::Unknown);
  client.shutdown();  // idempotent
}

TEST_CASE("a lock may outlive its Client") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  auto client = std::make_unique<Client>(options);
  auto lock = client->acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  auto heartbeat = lock->startHeartbeat();
  client.reset();  // shuts down: releases the lock
  CHECK_FALSE(redis.exists(test::lockKey(options, "chat-1")));
  CHECK(lock->release() == ReleaseOutcome::AlreadyReleased);
  heartbeat.stop();
}

TEST_CASE("one heartbeat thread keeps thousands of locks alive") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = 3s;
  options.lock.heartbeatInterval = 500ms;
  test::TestRedis redis(test::redisUrl());
  std::thread([] {}).join();  // sanitizers start their helper thread with the first thread
  const auto threadsBefore = test::threadCount();
  Client client(options);

  constexpr int count = 2000;
  std::vector<StreamLock> locks;
  std::vector<streamlock::Heartbeat> heartbeats;
  std::vector<std::string> keys;
  locks.reserve(count);
  std::size_t threadsWithOneLock = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    const std::string chat = "chat-" + std::to_string(i);
    auto lock = client.acquireStreamLock(chat, "stream-" + std::to_string(i));
    REQUIRE(lock);
    heartbeats.push_back(lock->startHeartbeat());
    locks.push_back(std::move(*lock));
    keys.push_back(test::lockKey(options, chat));
    if (i == 0) threadsWithOneLock = test::threadCount();
  }
  CHECK(test::threadCount() == threadsWithOneLock);  // no thread per lock
  CHECK(threadsWithOneLock <= threadsBefore + 1);     // one heartbeat thread per Client

  // Every lock has outlived its first TTL: waiting for that is waiting for time itself.
  std::this_thread::sleep_until(start + options.lock.ttl + 1s);
  const auto values = redis.mget(keys);
  REQUIRE(values.size() == keys.size());
  int alive = 0;
  for (int i = 0; i < count; ++i) {
    if (values[static_cast<std::size_t>(i)] == Value("stream-" + std::to_string(i))) ++alive;
  }
  CHECK(alive == count);
  CHECK(client.counters().heartbeatsExtended >= static_cast<std::uint64_t>(count));
  CHECK(client.counters().heartbeatsLost == 0);
  CHECK(test::threadCount() <= threadsBefore + 1);
}

TEST_CASE("compare-and-expire and compare-and-delete survive SCRIPT FLUSH (NOSCRIPT fallback)") {
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 2s;
  options.lock.heartbeatInterval = 100ms;
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LostCalls lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  REQUIRE(test::waitUntil([&] { return client.counters().heartbeatsExtended >= 1; }));

  redis.ok({"SCRIPT", "FLUSH"});
  const auto extended = client.counters().heartbeatsExtended;
  CHECK(test::waitUntil([&] { return client.counters().heartbeatsExtended >= extended + 2; }));
  CHECK_FALSE(heartbeat.ownershipLost());
  CHECK(lost.count() == 0);

  redis.ok({"SCRIPT", "FLUSH"});
  CHECK(lock->release() == ReleaseOutcome::Released);
  CHECK_FALSE(redis.exists(test::lockKey(options, "chat-1")));
}
