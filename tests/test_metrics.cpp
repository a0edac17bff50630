// Client::metrics(): the snapshot a metrics library exports. Counters as counters() has them,
// gauges of the moment (locks held, pool connections), breaker transitions, and cumulative
// latency histograms of lookups and repairs.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "pg.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "streamlock/metrics.h"

using streamlock::BreakerState;
using streamlock::Client;
using streamlock::LatencyHistogram;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

// The shape every histogram of a snapshot must have, whatever it counted.
void checkWellFormed(const LatencyHistogram& h) {
  REQUIRE(h.upperBoundsSeconds.size() == h.counts.size());
  REQUIRE_FALSE(h.upperBoundsSeconds.empty());
  for (std::size_t i = 1; i < h.upperBoundsSeconds.size(); ++i) {
    CHECK(h.upperBoundsSeconds[i - 1] < h.upperBoundsSeconds[i]);
    CHECK(h.counts[i - 1] <= h.counts[i]);
  }
  CHECK(h.counts.back() <= h.count);
  CHECK(h.sumSeconds >= 0);
}

std::string closedUrl() { return "redis://127.0.0.1:" + std::to_string(test::closedPort()) + "/0"; }

}  // namespace

TEST_CASE("metrics: a new Client reports zeros, its PostgreSQL pool sizes and one Redis connection to come") {
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.redis.poolSize = 3;
  options.postgres.conninfo = test::databaseUrl();
  options.postgres.poolSize = 5;
  options.repair.poolSize = 2;
  Client client(options);

  const auto m = client.metrics();
  CHECK(m.locksHeld == 0);
  CHECK(m.breaker == BreakerState::Closed);
  CHECK(m.breakerTransitions.toOpen == 0);
  CHECK(m.breakerTransitions.toHalfOpen == 0);
  CHECK(m.breakerTransitions.toClosed == 0);
  CHECK(m.redisPool.open == 0);      // connections open lazily
  CHECK(m.redisPool.capacity == 1);  // one connection per Redis server, shared by every caller
  CHECK(m.postgresPool.capacity == 5);
  CHECK(m.repairPool.capacity == 2);
  CHECK(m.lookupLatency.count == 0);
  CHECK(m.repairLatency.count == 0);
  checkWellFormed(m.lookupLatency);
  checkWellFormed(m.repairLatency);
}

TEST_CASE("metrics: without Redis or PostgreSQL the pools are all zero") {
  test::CapturedLog log;
  Client client(test::clientOptions("", log));
  const auto m = client.metrics();
  CHECK(m.redisPool.capacity == 0);
  CHECK(m.postgresPool.capacity == 0);
  CHECK(m.repairPool.capacity == 0);
  CHECK(m.redisPool.open == 0);
}

TEST_CASE("metrics: every lookup is one observation of the lookup histogram, verified or unknown") {
  test::CapturedLog log;
  Client client(test::clientOptions(test::redisUrl(), log));
  static_cast<void>(client.getActiveChatStreamIds({}));                   // verified, no Redis call
  static_cast<void>(client.getActiveChatStreamIds({"chat-a", "chat-b"}));  // verified by one MGET
  static_cast<void>(client.reconcileChatStreamMarkers({{"chat-c", std::string("stream-c")}}));

  const auto m = client.metrics();
  checkWellFormed(m.lookupLatency);
  CHECK(m.lookupLatency.count == 3);
  CHECK(m.lookupLatency.count == m.counters.lookupsVerified + m.counters.lookupsUnknown);
  // Loopback lookups take well under the default 250 ms deadline.
  for (std::size_t i = 0; i < m.lookupLatency.upperBoundsSeconds.size(); ++i) {
    if (m.lookupLatency.upperBoundsSeconds[i] >= 0.25) CHECK(m.lookupLatency.counts[i] == 3);
  }
  CHECK(m.lookupLatency.sumSeconds > 0);
  CHECK(m.lookupLatency.sumSeconds < 0.75);
  // The Redis connection went back to the pool: open and idle, none in use.
  CHECK(m.redisPool.open >= 1);
  CHECK(m.redisPool.idle == m.redisPool.open);
  CHECK(m.redisPool.inUse == 0);
}

TEST_CASE("metrics: an unknown lookup on a refusing Redis is observed too") {
  test::CapturedLog log;
  auto options = test::clientOptions(closedUrl(), log);
  options.breaker.failureThreshold = 0;  // every call asks Redis
  Client client(options);
  static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
  const auto m = client.metrics();
  CHECK(m.counters.lookupsUnknown == 1);
  CHECK(m.lookupLatency.count == 1);
  CHECK(m.redisPool.open == 0);  // the failed connect is not counted as open
}

TEST_CASE("metrics: locks held go up on acquire and down on release") {
  test::CapturedLog log;
  Client client(test::clientOptions(test::redisUrl(), log));
  const std::string chat = "chat-" + test::uniqueId();
  auto first = client.acquireStreamLock(chat + "-1", "stream-1");
  auto second = client.acquireStreamLock(chat + "-2", "stream-2");
  REQUIRE(first);
  REQUIRE(second);
  CHECK(client.metrics().locksHeld == 2);
  first->release();
  CHECK(client.metrics().locksHeld == 1);
  second->release();
  CHECK(client.metrics().locksHeld == 0);
}

TEST_CASE("metrics: process-local locks (no Redis) count as held") {
  test::CapturedLog log;
  Client client(test::clientOptions("", log));
  auto lock = client.acquireStreamLock("chat-a", "stream-a");
  REQUIRE(lock);
  CHECK(client.metrics().locksHeld == 1);
  lock->release();
  CHECK(client.metrics().locksHeld == 0);
}

TEST_CASE("metrics: breaker transitions to open, half-open and closed") {
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 2;
  options.breaker.coolDown = 200ms;
  Client client(options);

  server.kill();
  for (int i = 0; i < 2; ++i) static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
  auto m = client.metrics();
  REQUIRE(m.breaker == BreakerState::Open);
  CHECK(m.breakerTransitions.toOpen == 1);
  CHECK(m.breakerTransitions.toHalfOpen == 0);

  // After the cool-down, a probe fails: half-open, then open again.
  REQUIRE(test::waitUntil(
      [&] {
        static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
        return client.metrics().breakerTransitions.toHalfOpen == 1;
      },
      10s, 20ms));
  m = client.metrics();
  CHECK(m.breakerTransitions.toOpen == 2);
  CHECK(m.breakerTransitions.toClosed == 0);
  CHECK(m.counters.breakerOpened == 1);  // the counter counts openings from closed only

  // Redis back: the next probe succeeds and closes the breaker.
  server.start();
  REQUIRE(test::waitUntil(
      [&] {
        static_cast<void>(client.getActiveChatStreamIds({"chat-a"}));
        return client.metrics().breaker == BreakerState::Closed;
      },
      10s, 20ms));
  m = client.metrics();
  CHECK(m.breakerTransitions.toHalfOpen == 2);
  CHECK(m.breakerTransitions.toOpen == 2);
  CHECK(m.breakerTransitions.toClosed == 1);
}

TEST_CASE("metrics: repairs with markers to clear are observed, with their pool") {
  test::TestDb db;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  Client client(options);

  const auto stale = chats.insert("stream-gone");
  const auto result = client.reconcileChatStreamMarkers(chats.candidates({stale}), {/*repair=*/true});
  REQUIRE(result.repair.cleared == 1);
  static_cast<void>(client.repairStaleMarkers({}));  // nothing to clear: no statement, no observation

  const auto m = client.metrics();
  checkWellFormed(m.repairLatency);
  CHECK(m.repairLatency.count == 1);
  CHECK(m.repairLatency.sumSeconds > 0);
  CHECK(m.repairPool.open >= 1);
  CHECK(m.repairPool.inUse == 0);
  CHECK(m.postgresPool.open == 0);  // the repair has a pool of its own
}

TEST_CASE("metrics: connections in use while a statement runs") {
  test::CapturedLog log;
  auto options = test::clientOptions("", log);
  options.postgres.conninfo = test::databaseUrl();
  options.postgres.poolSize = 2;
  Client client(options);
  std::thread sleeper([&] { client.postgres()->execute("SELECT pg_sleep(0.5)"); });
  const bool inUse = test::waitUntil([&] { return client.metrics().postgresPool.inUse == 1; }, 5s);
  sleeper.join();
  CHECK(inUse);
  const auto m = client.metrics();
  CHECK(m.postgresPool.inUse == 0);
  CHECK(m.postgresPool.idle == 1);
  CHECK(m.postgresPool.open == 1);
}
