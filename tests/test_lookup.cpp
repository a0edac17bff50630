// getActiveChatStreamIds: verified from one batched MGET, or unknown from the local pending map
// (Redis not configured, refusing, hung, restarting, answering errors, or behind the breaker).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "capture_log.h"
#include "io/loop.h"
#include "redis/connection.h"
#include "redis/topology.h"
#include "client_options.h"
#include "env.h"
#include "redis_client.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "streamlock/error.h"

using streamlock::BreakerState;
using streamlock::Client;
using streamlock::LookupStatus;
using Owners = std::unordered_map<std::string, std::string>;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

std::string closedUrl() { return "redis://127.0.0.1:" + std::to_string(test::closedPort()) + "/0"; }

}  // namespace

TEST_CASE("empty input: verified, no owners and no Redis call at all") {
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  Client client(test::clientOptions(server.url(), log));

  const auto callsBefore = redis.callsExceptInfo();
  const auto connectionsBefore = redis.infoField("stats", "total_connections_received");
  const auto result = client.getActiveChatStreamIds({});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners.empty());
  CHECK(redis.callsExceptInfo() == callsBefore);
  CHECK(redis.infoField("stats", "total_connections_received") == connectionsBefore);
  CHECK(client.counters().lookupsVerified == 1);
  CHECK(client.counters().lookupsUnknown == 0);
}

TEST_CASE("verified: live locks are owners and expired or deleted locks are not") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);

  redis.set(test::lockKey(options, "live-1"), "stream-1");
  redis.setPx(test::lockKey(options, "live-2"), "stream-2", 60000);
  redis.set(test::lockKey(options, "expired"), "stream-3");
  redis.expireNow(test::lockKey(options, "expired"));
  redis.set(test::lockKey(options, "deleted"), "stream-4");
  redis.del(test::lockKey(options, "deleted"));

  const auto result = client.getActiveChatStreamIds({"live-1", "expired", "live-2", "deleted", "never-locked"});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners == Owners{{"live-1", "stream-1"}, {"live-2", "stream-2"}});
  CHECK(client.counters().lookupsVerified == 1);
}

TEST_CASE("verified: all locks expired gives no owners") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  for (const auto* chat : {"a", "b", "c"}) {
    redis.set(test::lockKey(options, chat), "stream");
    redis.expireNow(test::lockKey(options, chat));
  }
  const auto result = client.getActiveChatStreamIds({"a", "b", "c"});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners.empty());
}

TEST_CASE("verified: an empty lock value counts as absent") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  redis.set(test::lockKey(options, "empty"), "");
  redis.set(test::lockKey(options, "full"), "stream-f");
  const auto result = client.getActiveChatStreamIds({"empty", "full"});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners == Owners{{"full", "stream-f"}});
}

TEST_CASE("verified: a verified null beats a local pending entry") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);
  client.pendingStreams().record("local-only", "stream-local");
  client.pendingStreams().record("differs", "stream-local");
  redis.set(test::lockKey(options, "differs"), "stream-redis");

  const auto result = client.getActiveChatStreamIds({"local-only", "differs"});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners == Owners{{"differs", "stream-redis"}});
}

TEST_CASE("unknown: Redis not configured answers the local owners of the asked chats") {
  test::CapturedLog log;
  Client client(test::clientOptions("", log));
  client.pendingStreams().record("chat-a", "stream-a");
  client.pendingStreams().record("chat-not-asked", "stream-z");

  const auto result = client.getActiveChatStreamIds({"chat-a", "chat-b"});
  CHECK(result.status == LookupStatus::Unknown);
  CHECK(result.owners == Owners{{"chat-a", "stream-a"}});
  CHECK(client.counters().lookupsUnknown == 1);
  CHECK(client.counters().lookupsVerified == 0);
}

TEST_CASE("two Clients share no pending map") {
  test::CapturedLog log;
  Client first(test::clientOptions("", log));
  Client second(test::clientOptions("", log));
  first.pendingStreams().record("chat-a", "stream-a");
  CHECK(first.getActiveChatStreamIds({"chat-a"}).owners == Owners{{"chat-a", "stream-a"}});
  CHECK(second.getActiveChatStreamIds({"chat-a"}).owners.empty());
}

TEST_CASE("unknown: Redis refusing connections, with the local owners") {
  test::CapturedLog log;
  Client client(test::clientOptions(closedUrl(), log));
  client.pendingStreams().record("chat-a", "stream-a");

  const auto start = std::chrono::steady_clock::now();
  const auto result = client.getActiveChatStreamIds({"chat-a", "chat-b"});
  CHECK(test::elapsedSince(start) < 5s);  // no hang
  CHECK(result.status == LookupStatus::Unknown);
  CHECK(result.owners == Owners{{"chat-a", "stream-a"}});
  CHECK(client.counters().lookupsUnknown == 1);
  CHECK(client.counters().redisErrors >= 1);
}

TEST_CASE("unknown: Redis paused (SIGSTOP) answers unknown once the deadline passes") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 0;
  test::TestRedis(server.url()).set(test::lockKey(options, "chat-a"), "stream-a");

  SECTION("on a pooled connection") {
    Client client(options);
    REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Verified; }));
    client.pendingStreams().record("chat-b", "stream-b");
    server.pause();
    const auto start = std::chrono::steady_clock::now();
    const auto result = client.getActiveChatStreamIds({"chat-a", "chat-b"});
    const auto elapsed = test::elapsedSince(start);
    server.resume();
    CHECK(result.status == LookupStatus::Unknown);
    CHECK(result.owners == Owners{{"chat-b", "stream-b"}});  // never a mix of verified and local
    CHECK(elapsed < 5s);  // the deadline, not the original system's 5 s wait
    CHECK(client.counters().redisTimeouts >= 1);
  }
  SECTION("on a new connection (the kernel accepts, nothing answers)") {
    Client client(options);
    server.pause();
    const auto start = std::chrono::steady_clock::now();
    const auto result = client.getActiveChatStreamIds({"chat-a"});
    const auto elapsed = test::elapsedSince(start);
    server.resume();
    CHECK(result.status == LookupStatus::Unknown);
    CHECK(result.owners.empty());
    CHECK(elapsed < 5s);
    CHECK(client.counters().redisTimeouts >= 1);
  }
}

TEST_CASE("after Redis restarts on the same port the next call is verified again") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 0;  // no cool-down to account for
  Client client(options);
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Verified; }));

  SECTION("after a failed call while it was down") {
    server.kill();
    CHECK(client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Unknown);
    server.start();
  }
  SECTION("restarted between two calls: the pooled connection is dead") {
    server.kill();
    server.start();
  }
  test::TestRedis(server.url()).set(test::lockKey(options, "chat-a"), "stream-after");
  const auto result = client.getActiveChatStreamIds({"chat-a"});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners == Owners{{"chat-a", "stream-after"}});
}

TEST_CASE("a batch larger than mgetChunkSize is answered whole, one MGET per chunk") {
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.redis.mgetChunkSize = 1000;
  options.redis.lookupDeadline = 10s;  // generous: this checks completeness, not speed
  Client client(options);

  std::vector<std::string> chats;
  std::vector<std::pair<std::string, std::string>> locks;
  Owners expected;
  for (int i = 0; i < 2500; ++i) {
    const std::string chat = "chat-" + std::to_string(i);
    chats.push_back(chat);
    if (i % 25 == 7) continue;  // a few chats without a lock
    locks.emplace_back(test::lockKey(options, chat), "stream-" + std::to_string(i));
    expected.emplace(chat, "stream-" + std::to_string(i));
  }
  redis.mset(locks);

  const auto mgetBefore = redis.calls("mget");
  const auto result = client.getActiveChatStreamIds(chats);
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners.size() == expected.size());
  CHECK(result.owners == expected);
  CHECK(redis.calls("mget") - mgetBefore == 3);
}

TEST_CASE("connection: a lookup's MGET answers go straight into their owners, chunk by chunk, also when abandoned") {
  namespace detail = streamlock::detail;
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  redis.mset({{"k:a", "stream-a"}, {"k:c", "stream-c"}, {"k:e", "stream-e"}});
  const std::vector<std::string> chats{"a", "b", "c", "d", "e"};
  std::vector<const std::string*> ids;
  for (const auto& chat : chats) ids.push_back(&chat);

  struct Seen {
    std::vector<bool> sunkInPlace;  // per reply: no value per key, and its owners where the sink put them
    std::vector<std::string> owners;
    std::optional<std::string> error;
  };
  std::promise<Seen> seen;
  std::atomic<bool> abandonedRan{false};
  detail::Loop loop;
  std::unique_ptr<detail::RedisConnection> connection;
  detail::RedisServerSettings settings;
  settings.host = "127.0.0.1";
  settings.port = server.port();
  REQUIRE(loop.post([&] {
    connection = std::make_unique<detail::RedisConnection>(loop, settings);
    auto encode = [&](std::string& out) { detail::appendMgets(out, "k:", ids, 2); };
    // The first request is abandoned at once: its replies are still read into owners that only
    // the request keeps alive (ASan would see them freed), and dropped.
    const detail::MgetSink abandoned{std::make_shared<std::vector<std::string>>(chats.size()), 2};
    connection->abandon(
        connection->send(encode, 3, [&abandonedRan](detail::RedisOutcome) { abandonedRan = true; }, abandoned));
    const detail::MgetSink sink{std::make_shared<std::vector<std::string>>(chats.size()), 2};
    connection->send(encode, 3, [&seen, sink](detail::RedisOutcome outcome) {
      Seen out;
      if (outcome.error) {
        out.error = outcome.error->what();
        return seen.set_value(out);
      }
      for (std::size_t i = 0; i < outcome.replies.size(); ++i) {
        const detail::ReplyValue* reply = outcome.replies[i].get();
        out.sunkInPlace.push_back(reply->element == nullptr && reply->sunkOwners == sink.slice(i).owners);
      }
      detail::readMgetReplies(outcome.replies, sink);
      out.owners = *sink.owners;
      seen.set_value(out);
    }, sink);
  }));
  auto future = seen.get_future();
  REQUIRE(future.wait_for(10s) == std::future_status::ready);
  const Seen result = future.get();
  std::promise<void> closed;
  REQUIRE(loop.post([&] {
    connection.reset();
    closed.set_value();
  }));
  closed.get_future().wait();

  REQUIRE_FALSE(result.error);
  CHECK_FALSE(abandonedRan);
  CHECK(result.sunkInPlace == std::vector<bool>{true, true, true});
  CHECK(result.owners == std::vector<std::string>{"stream-a", "", "stream-c", "", "stream-e"});
}

TEST_CASE("unknown: an error reply (an ACL user without +mget)") {
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  const std::string host = "127.0.0.1:" + std::to_string(server.port());
  admin.ok({"ACL", "SETUSER", "limited", "on", ">s3cr3t-pw", "~*", "+@all", "-mget"});
  admin.ok({"ACL", "SETUSER", "full", "on", ">s3cr3t-pw", "~*", "+@all"});

  auto options = test::clientOptions("redis://limited:s3cr3t-pw@" + host + "/0", log);
  admin.set(test::lockKey(options, "chat-a"), "stream-a");

  SECTION("the user may not MGET: unknown") {
    Client client(options);
    client.pendingStreams().record("chat-b", "stream-b");
    const auto result = client.getActiveChatStreamIds({"chat-a", "chat-b"});
    CHECK(result.status == LookupStatus::Unknown);
    CHECK(result.owners == Owners{{"chat-b", "stream-b"}});
    CHECK(client.counters().redisErrors >= 1);
  }
  SECTION("control: the same credentials with +mget are verified") {
    options.redis.url = "redis://full:s3cr3t-pw@" + host + "/0";
    Client client(options);
    const auto result = client.getActiveChatStreamIds({"chat-a", "chat-b"});
    CHECK(result.status == LookupStatus::Verified);
    CHECK(result.owners == Owners{{"chat-a", "stream-a"}});
  }
  for (const auto& message : log.messages()) {
    INFO(message);
    CHECK(message.find("s3cr3t-pw") == std::string::npos);
  }
}

TEST_CASE("unknown: an error in one chunk makes the whole batch unknown") {
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions("", log);
  // This user may read the keys of chats "ok-*" only.
  admin.ok({"ACL", "SETUSER", "partial", "on", ">pw", "~" + options.lock.keyPrefix + "ok-*", "+@all"});
  options.redis.url = "redis://partial:pw@127.0.0.1:" + std::to_string(server.port()) + "/0";
  options.redis.mgetChunkSize = 2;
  options.redis.poolSize = 1;  // every lookup on the same connection
  admin.set(test::lockKey(options, "ok-1"), "stream-1");
  admin.set(test::lockKey(options, "ok-2"), "stream-2");
  admin.set(test::lockKey(options, "no-3"), "stream-3");
  Client client(options);

  SECTION("the error in the last chunk") {
    const auto result = client.getActiveChatStreamIds({"ok-1", "ok-2", "no-3"});
    CHECK(result.status == LookupStatus::Unknown);
    CHECK(result.owners.empty());  // never a mix of verified and unknown keys
  }
  SECTION("the error in the first chunk, before a chunk that succeeds") {
    const auto result = client.getActiveChatStreamIds({"no-3", "ok-1", "ok-2"});
    CHECK(result.status == LookupStatus::Unknown);
    CHECK(result.owners.empty());
  }
  // The connection read every reply of the failed pipeline: the next lookup on it gets its own.
  const auto control = client.getActiveChatStreamIds({"ok-2", "ok-1", "ok-3"});
  CHECK(control.status == LookupStatus::Verified);
  CHECK(control.owners == Owners{{"ok-1", "stream-1"}, {"ok-2", "stream-2"}});
}

TEST_CASE("breaker: opens after failureThreshold consecutive failures and short-circuits") {
  test::CapturedLog log;
  auto options = test::clientOptions(closedUrl(), log);
  options.breaker.failureThreshold = 3;
  options.breaker.coolDown = 60s;  // stays open for the whole test
  Client client(options);
  client.pendingStreams().record("chat-a", "stream-a");

  for (int i = 0; i < 2; ++i) {
    CHECK(client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Unknown);
    CHECK(client.breakerState() == BreakerState::Closed);
  }
  CHECK(client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Unknown);
  CHECK(client.breakerState() == BreakerState::Open);
  const auto opened = client.counters();
  CHECK(opened.breakerOpened == 1);
  CHECK(opened.breakerShortCircuits == 0);

  for (int i = 0; i < 5; ++i) {
    const auto result = client.getActiveChatStreamIds({"chat-a"});
    CHECK(result.status == LookupStatus::Unknown);
    CHECK(result.owners == Owners{{"chat-a", "stream-a"}});
  }
  const auto after = client.counters();
  CHECK(after.breakerShortCircuits == 5);
  CHECK(after.redisErrors == opened.redisErrors);  // Redis was not asked
  CHECK(after.breakerOpened == 1);
  CHECK(after.lookupsUnknown == 8);
  CHECK(client.breakerState() == BreakerState::Open);
  CHECK(client.redisStatus().mode == streamlock::RedisStatus::Mode::Unknown);
  CHECK(client.redisStatus().breaker == BreakerState::Open);
}

TEST_CASE("breaker: an open breaker does not ask Redis even when it is back") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 3;
  options.breaker.coolDown = 60s;
  Client client(options);
  server.kill();
  for (int i = 0; i < 3; ++i) static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
  REQUIRE(client.breakerState() == BreakerState::Open);
  server.start();
  test::TestRedis redis(server.url());
  redis.set(test::lockKey(options, "chat-a"), "stream-a");

  const auto callsBefore = redis.callsExceptInfo();
  CHECK(client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Unknown);
  CHECK(redis.callsExceptInfo() == callsBefore);
  CHECK(client.counters().breakerShortCircuits == 1);
}

TEST_CASE("breaker: a successful lookup resets the count of consecutive failures") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 3;
  options.breaker.coolDown = 60s;
  Client client(options);
  for (int round = 0; round < 2; ++round) {
    server.kill();
    static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
    static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
    server.start();
    CHECK(client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Verified);
  }
  CHECK(client.breakerState() == BreakerState::Closed);
  CHECK(client.counters().breakerOpened == 0);
}

TEST_CASE("breaker: closes after a successful probe once the cool-down has passed") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 3;
  options.breaker.coolDown = 300ms;
  Client client(options);
  server.kill();
  for (int i = 0; i < 3; ++i) static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
  REQUIRE(client.breakerState() == BreakerState::Open);
  server.start();
  test::TestRedis(server.url()).set(test::lockKey(options, "chat-a"), "stream-a");

  // Short-circuited calls answer unknown until the cool-down ends; then the probe is verified.
  LookupStatus status = LookupStatus::Unknown;
  Owners owners;
  const bool verified = test::waitUntil(
      [&] {
        const auto result = client.getActiveChatStreamIds({"chat-a"});
        status = result.status;
        owners = result.owners;
        return status == LookupStatus::Verified;
      },
      10s, 20ms);
  CHECK(verified);
  CHECK(owners == Owners{{"chat-a", "stream-a"}});
  CHECK(client.breakerState() == BreakerState::Closed);
  CHECK(client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Verified);
  CHECK(client.counters().breakerOpened == 1);
}

TEST_CASE("breaker: a failed probe opens it again") {
  test::CapturedLog log;
  auto options = test::clientOptions(closedUrl(), log);
  options.breaker.failureThreshold = 3;
  options.breaker.coolDown = 300ms;
  Client client(options);
  for (int i = 0; i < 3; ++i) static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
  REQUIRE(client.breakerState() == BreakerState::Open);
  const auto errorsWhenOpened = client.counters().redisErrors;

  // Once the cool-down ends, one call probes (and fails): Redis is asked once more.
  CHECK(test::waitUntil(
      [&] {
        static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
        return client.counters().redisErrors > errorsWhenOpened;
      },
      10s, 20ms));
  CHECK(client.counters().redisErrors == errorsWhenOpened + 1);
  CHECK(client.breakerState() == BreakerState::Open);
}

TEST_CASE("breaker: half-open lets one probe through while the others answer unknown at once") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 3;
  options.breaker.coolDown = 300ms;
  options.redis.lookupDeadline = 3s;  // the probe hangs on a paused server this long
  options.redis.connectTimeout = 3s;
  Client client(options);
  server.kill();  // refused: three quick failures
  for (int i = 0; i < 3; ++i) static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
  REQUIRE(client.breakerState() == BreakerState::Open);
  server.start();
  server.pause();  // the probe will hang until its deadline

  // Waiting out a cool-down is waiting for time itself.
  std::this_thread::sleep_for(options.breaker.coolDown + 100ms);
  REQUIRE(test::connectionsTo(server.port()) == 0);
  auto probe = std::async(std::launch::async, [&] { return client.getActiveChatStreamIds({"chat-a"}).status; });
  // The probe is in flight once its connection to the paused server is established.
  const bool probing = test::waitUntil([&] { return test::connectionsTo(server.port()) >= 1; });
  const auto shortCircuitsBefore = client.counters().breakerShortCircuits;
  const auto other = client.getActiveChatStreamIds({"chat-a"});
  const auto shortCircuitsAfter = client.counters().breakerShortCircuits;
  const auto stateDuringProbe = client.breakerState();
  const auto probeStatus = probe.get();
  server.resume();

  CHECK(probing);
  CHECK(other.status == LookupStatus::Unknown);
  CHECK(shortCircuitsAfter == shortCircuitsBefore + 1);
  CHECK(stateDuringProbe == BreakerState::HalfOpen);
  CHECK(probeStatus == LookupStatus::Unknown);
  CHECK(client.breakerState() == BreakerState::Open);
}

TEST_CASE("a pooled connection the server killed does not make the next lookup unknown") {
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  Client client(options);
  admin.set(test::lockKey(options, "chat-a"), "stream-a");
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"chat-a"}).status == LookupStatus::Verified; }));

  REQUIRE(admin.integer({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}) >= 1);
  const auto result = client.getActiveChatStreamIds({"chat-a"});
  CHECK(result.status == LookupStatus::Verified);
  CHECK(result.owners == Owners{{"chat-a", "stream-a"}});
}

TEST_CASE("redisStatus: disabled, verified or unknown") {
  test::CapturedLog log;
  CHECK(Client(test::clientOptions("", log)).redisStatus().mode == streamlock::RedisStatus::Mode::Disabled);
  CHECK(Client(test::clientOptions(test::redisUrl(), log)).redisStatus().mode ==
        streamlock::RedisStatus::Mode::Verified);
  const auto refused = Client(test::clientOptions(closedUrl(), log)).redisStatus();
  CHECK(refused.mode == streamlock::RedisStatus::Mode::Unknown);
  CHECK(refused.breaker == BreakerState::Closed);
}

TEST_CASE("Client: options it cannot honour are invalid arguments") {
  test::CapturedLog log;
  auto code = [&](const std::function<void(streamlock::Options&)>& change) {
    auto options = test::clientOptions(test::redisUrl(), log);
    change(options);
    try {
      Client client(options);
    } catch (const streamlock::Error& error) {
      return std::optional<streamlock::ErrorCode>(error.code());
    }
    return std::optional<streamlock::ErrorCode>();
  };
  const std::optional<streamlock::ErrorCode> invalid = streamlock::ErrorCode::InvalidArgument;
  CHECK(code([](auto& o) { o.lock.ttl = 0s; }) == invalid);
  CHECK(code([](auto& o) { o.lock.heartbeatInterval = o.lock.ttl; }) == invalid);
  CHECK(code([](auto& o) { o.redis.mgetChunkSize = 0; }) == invalid);
  CHECK(code([](auto& o) { o.redis.lookupDeadline = 0ms; }) == invalid);
  CHECK(code([](auto& o) { o.repair.table.clear(); }) == invalid);
  CHECK(code([](auto&) {}) == std::nullopt);  // control
}
