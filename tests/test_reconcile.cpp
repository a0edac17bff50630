// The contract's reconciliation table, row by row: first through the pure reconcileMarkers, then
// through Client::reconcileChatStreamMarkers against a real Redis.
//
// | persisted marker | lock status | lock owner                  | result                        |
// | null             | any         | any (even present)          | inactive, null                |
// | set              | verified    | present (any value)         | active, owner                 |
// | set              | verified    | absent                      | inactive, null (stale marker) |
// | set              | unknown     | local owner equal to marker | active, marker                |
// | set              | unknown     | none, or a different owner  | unknown, marker (preserved)   |
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "redis_client.h"
#include "redis_server.h"
#include "streamlock/client.h"

using streamlock::ActiveStreams;
using streamlock::Client;
using streamlock::LookupStatus;
using streamlock::MarkerCandidate;
using streamlock::MarkerState;
using streamlock::ReconciledMarker;
using streamlock::reconcileMarkers;
using Marker = std::optional<std::string>;
namespace test = streamlock::test;

namespace {

const Marker none = std::nullopt;

ActiveStreams lookup(LookupStatus status, std::unordered_map<std::string, std::string> owners) {
  ActiveStreams active;
  active.status = status;
  active.owners = std::move(owners);
  return active;
}

// The one result of reconciling a single candidate.
ReconciledMarker reconcileOne(const Marker& marker, const ActiveStreams& active) {
  const auto results = reconcileMarkers({{"chat-1", marker}}, active);
  REQUIRE(results.size() == 1);
  CHECK(results[0].chatId == "chat-1");
  return results[0];
}

}  // namespace

TEST_CASE("pure: null marker is inactive whatever the lock says (the teardown window)", "[unit]") {
  for (const auto status : {LookupStatus::Verified, LookupStatus::Unknown}) {
    INFO(streamlock::toString(status));
    for (const auto& owners : {std::unordered_map<std::string, std::string>{},
                               std::unordered_map<std::string, std::string>{{"chat-1", "stream-a"}}}) {
      const auto result = reconcileOne(none, lookup(status, owners));
      CHECK(result.state == MarkerState::Inactive);
      CHECK(result.streamId == none);
      CHECK(result.staleMarker == none);
    }
  }
}

TEST_CASE("pure: an empty marker counts as null", "[unit]") {
  for (const auto status : {LookupStatus::Verified, LookupStatus::Unknown}) {
    INFO(streamlock::toString(status));
    const auto result = reconcileOne(std::string(), lookup(status, {{"chat-1", "stream-a"}}));
    CHECK(result.state == MarkerState::Inactive);
    CHECK(result.streamId == none);
    CHECK(result.staleMarker == none);
  }
}

TEST_CASE("pure: marker set + verified + owner present -> active with the owner", "[unit]") {
  SECTION("owner equal to the marker") {
    const auto result = reconcileOne("stream-a", lookup(LookupStatus::Verified, {{"chat-1", "stream-a"}}));
    CHECK(result.state == MarkerState::Active);
    CHECK(result.streamId == Marker("stream-a"));
    CHECK(result.staleMarker == none);
  }
  SECTION("owner wins over a stale DB value") {
    const auto result = reconcileOne("stream-old", lookup(LookupStatus::Verified, {{"chat-1", "stream-new"}}));
    CHECK(result.state == MarkerState::Active);
    CHECK(result.streamId == Marker("stream-new"));
    CHECK(result.staleMarker == none);
  }
}

TEST_CASE("pure: marker set + verified + owner absent -> inactive and a stale marker", "[unit]") {
  SECTION("no lock") {
    const auto result = reconcileOne("stream-a", lookup(LookupStatus::Verified, {{"chat-other", "stream-a"}}));
    CHECK(result.state == MarkerState::Inactive);
    CHECK(result.streamId == none);
    CHECK(result.staleMarker == Marker("stream-a"));
  }
  SECTION("a lock whose value is empty counts as absent") {
    const auto result = reconcileOne("stream-a", lookup(LookupStatus::Verified, {{"chat-1", ""}}));
    CHECK(result.state == MarkerState::Inactive);
    CHECK(result.streamId == none);
    CHECK(result.staleMarker == Marker("stream-a"));
  }
}

TEST_CASE("pure: marker set + unknown + local owner equal to the marker -> active", "[unit]") {
  const auto result = reconcileOne("stream-a", lookup(LookupStatus::Unknown, {{"chat-1", "stream-a"}}));
  CHECK(result.state == MarkerState::Active);
  CHECK(result.streamId == Marker("stream-a"));
  CHECK(result.staleMarker == none);
}

TEST_CASE("pure: marker set + unknown + a different local owner -> unknown with the marker preserved", "[unit]") {
  const auto result = reconcileOne("stream-a", lookup(LookupStatus::Unknown, {{"chat-1", "stream-b"}}));
  CHECK(result.state == MarkerState::Unknown);
  CHECK(result.streamId == Marker("stream-a"));
  CHECK(result.staleMarker == none);  // never repaired on unknown
}

TEST_CASE("pure: marker set + unknown + no local owner -> unknown with the marker preserved", "[unit]") {
  const auto result = reconcileOne("stream-a", lookup(LookupStatus::Unknown, {}));
  CHECK(result.state == MarkerState::Unknown);
  CHECK(result.streamId == Marker("stream-a"));
  CHECK(result.staleMarker == none);
}

TEST_CASE("pure: one result per candidate in input order", "[unit]") {
  const std::vector<MarkerCandidate> candidates{
      {"chat-c", Marker("stream-c")}, {"chat-a", none}, {"chat-b", Marker("stream-b")}, {"chat-d", Marker("")}};
  const auto results =
      reconcileMarkers(candidates, lookup(LookupStatus::Verified, {{"chat-b", "stream-b"}, {"chat-a", "stream-x"}}));
  REQUIRE(results.size() == 4);
  CHECK(results[0].chatId == "chat-c");
  CHECK(results[0].state == MarkerState::Inactive);
  CHECK(results[0].staleMarker == Marker("stream-c"));
  CHECK(results[1].chatId == "chat-a");
  CHECK(results[1].state == MarkerState::Inactive);
  CHECK(results[2].chatId == "chat-b");
  CHECK(results[2].state == MarkerState::Active);
  CHECK(results[3].chatId == "chat-d");
  CHECK(results[3].state == MarkerState::Inactive);
  CHECK(results[3].staleMarker == none);
  CHECK(reconcileMarkers({}, lookup(LookupStatus::Verified, {})).empty());
}

TEST_CASE("Client, verified: every row against real Redis") {
  test::CapturedLog log;
  const auto options = test::clientOptions(test::redisUrl(), log);
  test::TestRedis redis(test::redisUrl());
  Client client(options);

  redis.set(test::lockKey(options, "teardown"), "stream-t");  // lock present, marker already cleared
  redis.set(test::lockKey(options, "live"), "stream-l");
  redis.set(test::lockKey(options, "overtaken"), "stream-new");
  redis.set(test::lockKey(options, "empty-lock"), "");
  redis.set(test::lockKey(options, "empty-marker"), "stream-e");
  // "stale" has no lock at all.
  // A local pending entry must not matter when Redis answers.
  client.pendingStreams().record("stale", "stream-s");

  const auto result = client.reconcileChatStreamMarkers({{"teardown", none},
                                                         {"live", Marker("stream-l")},
                                                         {"overtaken", Marker("stream-old")},
                                                         {"stale", Marker("stream-s")},
                                                         {"empty-lock", Marker("stream-x")},
                                                         {"empty-marker", Marker("")}});
  CHECK(result.status == LookupStatus::Verified);
  REQUIRE(result.markers.size() == 6);
  const auto& m = result.markers;

  CHECK(m[0].chatId == "teardown");
  CHECK(m[0].state == MarkerState::Inactive);
  CHECK(m[0].streamId == none);
  CHECK(m[0].staleMarker == none);

  CHECK(m[1].chatId == "live");
  CHECK(m[1].state == MarkerState::Active);
  CHECK(m[1].streamId == Marker("stream-l"));

  CHECK(m[2].chatId == "overtaken");
  CHECK(m[2].state == MarkerState::Active);
  CHECK(m[2].streamId == Marker("stream-new"));  // the owner wins over the stale DB value

  CHECK(m[3].chatId == "stale");
  CHECK(m[3].state == MarkerState::Inactive);  // a verified null beats the local entry
  CHECK(m[3].streamId == none);
  CHECK(m[3].staleMarker == Marker("stream-s"));

  CHECK(m[4].chatId == "empty-lock");
  CHECK(m[4].state == MarkerState::Inactive);
  CHECK(m[4].streamId == none);
  CHECK(m[4].staleMarker == Marker("stream-x"));

  CHECK(m[5].chatId == "empty-marker");
  CHECK(m[5].state == MarkerState::Inactive);
  CHECK(m[5].streamId == none);
  CHECK(m[5].staleMarker == none);

  CHECK(result.repair.cleared == 0);
  CHECK_FALSE(result.repair.failed);
  // Reading never touches the locks.
  CHECK(redis.get(test::lockKey(options, "teardown")) == Marker("stream-t"));
  CHECK(redis.get(test::lockKey(options, "overtaken")) == Marker("stream-new"));
}

TEST_CASE("Client, unknown because Redis is not configured: the local owners decide") {
  test::CapturedLog log;
  Client client(test::clientOptions("", log));
  client.pendingStreams().record("local-equal", "stream-a");
  client.pendingStreams().record("local-different", "stream-newer");
  client.pendingStreams().record("teardown", "stream-t");

  const auto result = client.reconcileChatStreamMarkers({{"local-equal", Marker("stream-a")},
                                                         {"local-different", Marker("stream-b")},
                                                         {"no-owner", Marker("stream-c")},
                                                         {"teardown", none}});
  CHECK(result.status == LookupStatus::Unknown);
  REQUIRE(result.markers.size() == 4);
  const auto& m = result.markers;
  CHECK(m[0].state == MarkerState::Active);
  CHECK(m[0].streamId == Marker("stream-a"));
  CHECK(m[1].state == MarkerState::Unknown);
  CHECK(m[1].streamId == Marker("stream-b"));  // the marker is preserved, not the local owner
  CHECK(m[2].state == MarkerState::Unknown);
  CHECK(m[2].streamId == Marker("stream-c"));
  CHECK(m[3].state == MarkerState::Inactive);
  CHECK(m[3].streamId == none);
  for (const auto& marker : m) CHECK(marker.staleMarker == none);
}

TEST_CASE("Client, unknown because Redis refuses connections: markers preserved") {
  test::CapturedLog log;
  Client client(test::clientOptions("redis://127.0.0.1:" + std::to_string(test::closedPort()) + "/0", log));
  client.pendingStreams().record("local-equal", "stream-a");

  const auto result =
      client.reconcileChatStreamMarkers({{"local-equal", Marker("stream-a")}, {"no-owner", Marker("stream-c")}});
  CHECK(result.status == LookupStatus::Unknown);
  REQUIRE(result.markers.size() == 2);
  CHECK(result.markers[0].state == MarkerState::Active);
  CHECK(result.markers[0].streamId == Marker("stream-a"));
  CHECK(result.markers[1].state == MarkerState::Unknown);
  CHECK(result.markers[1].streamId == Marker("stream-c"));
  CHECK(result.markers[1].staleMarker == none);
}

TEST_CASE("Client: only candidates with a marker are looked up") {
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  const auto options = test::clientOptions(server.url(), log);
  Client client(options);
  for (const auto* chat : {"a", "b", "c", "d", "e", "f"}) redis.set(test::lockKey(options, chat), "stream");

  // MGET counts one keyspace hit or miss per key it reads.
  auto keysRead = [&] {
    return redis.infoField("stats", "keyspace_hits") + redis.infoField("stats", "keyspace_misses");
  };

  SECTION("no candidate with a marker: no Redis call at all") {
    const auto callsBefore = redis.callsExceptInfo();
    const auto result = client.reconcileChatStreamMarkers({{"a", none}, {"b", Marker("")}, {"c", none}});
    CHECK(redis.callsExceptInfo() == callsBefore);
    CHECK(result.status == LookupStatus::Verified);
    REQUIRE(result.markers.size() == 3);
    for (const auto& marker : result.markers) CHECK(marker.state == MarkerState::Inactive);
  }
  SECTION("a mixed batch reads only the keys of the marked candidates") {
    const auto before = keysRead();
    const auto result = client.reconcileChatStreamMarkers({{"a", none},
                                                           {"b", Marker("stream")},
                                                           {"c", Marker("")},
                                                           {"d", none},
                                                           {"e", Marker("stream")},
                                                           {"f", none},
                                                           {"g", Marker("stream")}});
    CHECK(keysRead() - before == 3);
    CHECK(result.status == LookupStatus::Verified);
    REQUIRE(result.markers.size() == 7);
    CHECK(result.markers[1].state == MarkerState::Active);
    CHECK(result.markers[4].state == MarkerState::Active);
    CHECK(result.markers[6].state == MarkerState::Inactive);
    CHECK(result.markers[6].staleMarker == Marker("stream"));
  }
}
