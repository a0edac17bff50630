// Repair: compare-and-clear of verified-stale markers, in one statement, before the read
// returns; never on unknown, never a marker that changed after it was read. Plus the writer's
// writeMarker / clearMarker.
#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "pg.h"
#include "redis_client.h"
#include "streamlock/client.h"
#include "streamlock/error.h"

using streamlock::Client;
using streamlock::LookupStatus;
using streamlock::MarkerState;
using streamlock::ReconcileOptions;
using Marker = std::optional<std::string>;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

const ReconcileOptions withRepair{true};

// A Client on the shared Redis whose repair table is this test's own table.
struct RepairFixture {
  test::TestDb db;
  test::ChatsTable chats{db};
  test::TestRedis redis{test::redisUrl()};
  test::CapturedLog log;
  streamlock::Options options = makeOptions(test::redisUrl());

  streamlock::Options makeOptions(const std::string& redisUrl) {
    return test::clientOptions(redisUrl, log, chats);
  }
  void lock(const std::string& chat, const std::string& stream) {
    redis.set(test::lockKey(options, chat), stream);
  }
};

}  // namespace

TEST_CASE("repair clears the verified-stale markers and only those") {
  RepairFixture f;
  Client client(f.options);
  const auto active = f.chats.insert("stream-a");
  f.lock(active, "stream-a");
  const auto stale = f.chats.insert("stream-s");
  const auto overtaken = f.chats.insert("stream-old");
  f.lock(overtaken, "stream-new");
  const auto clean = f.chats.insert(std::nullopt);
  const auto teardown = f.chats.insert(std::nullopt);
  f.lock(teardown, "stream-t");

  const auto result =
      client.reconcileChatStreamMarkers(f.chats.candidates({active, stale, overtaken, clean, teardown}), withRepair);
  CHECK(result.status == LookupStatus::Verified);
  REQUIRE(result.markers.size() == 5);
  CHECK(result.markers[0].state == MarkerState::Active);
  CHECK(result.markers[1].state == MarkerState::Inactive);
  CHECK(result.markers[1].staleMarker == Marker("stream-s"));
  CHECK(result.markers[2].state == MarkerState::Active);
  CHECK(result.markers[2].streamId == Marker("stream-new"));
  CHECK(result.repair.cleared == 1);
  CHECK_FALSE(result.repair.failed);

  CHECK(f.chats.marker(active) == Marker("stream-a"));
  CHECK(f.chats.marker(stale) == std::nullopt);
  CHECK(f.chats.marker(overtaken) == Marker("stream-old"));  // an owner exists: not stale
  CHECK(f.chats.marker(clean) == std::nullopt);
  CHECK(client.counters().markersRepaired == 1);
  CHECK(client.counters().repairFailures == 0);
}

TEST_CASE("repair never clears a marker that changed after it was read") {
  RepairFixture f;
  Client client(f.options);
  const auto chat = f.chats.insert("stream-1");
  const auto candidates = f.chats.candidates({chat});  // the reader reads the database first
  f.chats.setMarker(chat, "stream-2");                  // then a new stream starts

  const auto result = client.reconcileChatStreamMarkers(candidates, withRepair);
  CHECK(result.status == LookupStatus::Verified);
  REQUIRE(result.markers.size() == 1);
  CHECK(result.markers[0].staleMarker == Marker("stream-1"));
  CHECK(result.repair.cleared == 0);
  CHECK_FALSE(result.repair.failed);
  CHECK(f.chats.marker(chat) == Marker("stream-2"));
  CHECK(client.counters().markersRepaired == 0);
}

TEST_CASE("repair never runs on an unknown status") {
  RepairFixture f;
  SECTION("Redis refusing connections") {
    f.options.redis.url = "redis://127.0.0.1:" + std::to_string(test::closedPort()) + "/0";
  }
  SECTION("Redis not configured") { f.options.redis.url.clear(); }
  Client client(f.options);
  const auto chat = f.chats.insert("stream-1");  // no lock anywhere: stale if Redis could say so

  const auto updatesBefore = f.db.updateCalls(f.chats.name());
  const auto result = client.reconcileChatStreamMarkers(f.chats.candidates({chat}), withRepair);
  CHECK(result.status == LookupStatus::Unknown);
  REQUIRE(result.markers.size() == 1);
  CHECK(result.markers[0].state == MarkerState::Unknown);
  CHECK(result.markers[0].streamId == Marker("stream-1"));
  CHECK(result.repair.cleared == 0);
  CHECK(f.chats.marker(chat) == Marker("stream-1"));
  CHECK(f.db.updateCalls(f.chats.name()) == updatesBefore);
}

TEST_CASE("repair=false reads without writing") {
  RepairFixture f;
  Client client(f.options);
  const auto chat = f.chats.insert("stream-1");
  const auto updatesBefore = f.db.updateCalls(f.chats.name());
  const auto result = client.reconcileChatStreamMarkers(f.chats.candidates({chat}));
  REQUIRE(result.markers.size() == 1);
  CHECK(result.markers[0].staleMarker == Marker("stream-1"));
  CHECK(result.repair.cleared == 0);
  CHECK(f.chats.marker(chat) == Marker("stream-1"));
  CHECK(f.db.updateCalls(f.chats.name()) == updatesBefore);
}

TEST_CASE("repair is ONE statement per batch and writes only the marker column") {
  RepairFixture f;
  Client client(f.options);
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(f.chats.insert("stream-stale-" + std::to_string(i)));
  for (int i = 0; i < 5; ++i) {
    ids.push_back(f.chats.insert("stream-live-" + std::to_string(i)));
    f.lock(ids.back(), "stream-live-" + std::to_string(i));
  }
  const auto updatedAtBefore = f.chats.updatedAt(ids.front());

  const auto updatesBefore = f.db.updateCalls(f.chats.name());
  const auto result = client.reconcileChatStreamMarkers(f.chats.candidates(ids), withRepair);
  CHECK(f.db.updateCalls(f.chats.name()) - updatesBefore == 1);
  CHECK(result.repair.cleared == 50);
  CHECK_FALSE(result.repair.failed);
  CHECK(client.counters().markersRepaired == 50);
  for (std::size_t i = 0; i < 50; ++i) CHECK(f.chats.marker(ids[i]) == std::nullopt);
  for (std::size_t i = 50; i < ids.size(); ++i) CHECK(f.chats.marker(ids[i]).has_value());

  CHECK(f.chats.updatedAt(ids.front()) == updatedAtBefore);
  const auto statement = f.db.scalar(
      "SELECT query FROM pg_stat_statements WHERE strpos(query, $1) > 0 AND query ~* '\\mupdate\\M' LIMIT 1",
      {f.chats.name()});
  REQUIRE(statement);
  INFO(*statement);
  CHECK(statement->find("updated_at") == std::string::npos);
}

TEST_CASE("a repair blocked by a row lock fails in bounded time and the read stays correct") {
  RepairFixture f;
  Client client(f.options);
  const auto chat = f.chats.insert("stream-1");
  const auto live = f.chats.insert("stream-2");
  f.lock(live, "stream-2");
  const auto candidates = f.chats.candidates({chat, live});

  test::TestDb blocker;  // another connection's open transaction holds the row
  blocker.exec("BEGIN");
  blocker.exec("SELECT id FROM " + f.chats.name() + " WHERE id = $1 FOR UPDATE", {chat});

  const auto start = std::chrono::steady_clock::now();
  const auto result = client.reconcileChatStreamMarkers(candidates, withRepair);
  const auto elapsed = test::elapsedSince(start);
  blocker.exec("ROLLBACK");

  CHECK(elapsed < 5s);
  CHECK(result.repair.failed);
  CHECK(result.repair.cleared == 0);
  CHECK(client.counters().repairFailures == 1);
  CHECK(result.status == LookupStatus::Verified);
  REQUIRE(result.markers.size() == 2);
  CHECK(result.markers[0].state == MarkerState::Inactive);
  CHECK(result.markers[0].streamId == std::nullopt);
  CHECK(result.markers[1].state == MarkerState::Active);
  CHECK(result.markers[1].streamId == Marker("stream-2"));
  CHECK(f.chats.marker(chat) == Marker("stream-1"));

  // No retry queue: the next read of the stale marker repairs it.
  const auto next = client.reconcileChatStreamMarkers(f.chats.candidates({chat}), withRepair);
  CHECK(next.repair.cleared == 1);
  CHECK_FALSE(next.repair.failed);
  CHECK(f.chats.marker(chat) == std::nullopt);
}

TEST_CASE("repairStaleMarkers: compare-and-clear against the value that was read") {
  RepairFixture f;
  Client client(f.options);
  const auto a = f.chats.insert("stream-a");
  const auto b = f.chats.insert("stream-b");
  const auto c = f.chats.insert(std::nullopt);

  const auto result = client.repairStaleMarkers({{a, "stream-a"}, {b, "stream-other"}, {c, "stream-c"}});
  CHECK(result.cleared == 1);
  CHECK_FALSE(result.failed);
  CHECK(f.chats.marker(a) == std::nullopt);
  CHECK(f.chats.marker(b) == Marker("stream-b"));
  CHECK(f.chats.marker(c) == std::nullopt);

  const auto none = client.repairStaleMarkers({});
  CHECK(none.cleared == 0);
  CHECK_FALSE(none.failed);
}

TEST_CASE("a candidate whose id does not fit the id column fails alone: the other stale markers are still cleared") {
  RepairFixture f;
  Client client(f.options);
  const auto a = f.chats.insert("stream-a");
  const auto b = f.chats.insert("stream-b");

  // The table's id is a uuid: "not-a-uuid" fails its cast, which fails a statement it shares.
  const auto result = client.repairStaleMarkers({{a, "stream-a"}, {"not-a-uuid", "stream-x"}, {b, "stream-b"}});
  CHECK(result.cleared == 2);
  CHECK(result.failed);
  CHECK(f.chats.marker(a) == std::nullopt);
  CHECK(f.chats.marker(b) == std::nullopt);
  CHECK(client.counters().markersRepaired == 2);
  CHECK(client.counters().repairFailures == 1);
  CHECK(f.log.contains("repair of 1 of 3 stale stream markers failed"));

  // Through a read: the bad candidate is stale (no lock), repaired alone, and fails alone.
  const auto c = f.chats.insert("stream-c");
  const auto read = client.reconcileChatStreamMarkers({{"not-a-uuid", "stream-x"}, {c, "stream-c"}}, withRepair);
  CHECK(read.status == LookupStatus::Verified);
  CHECK(read.repair.cleared == 1);
  CHECK(read.repair.failed);
  CHECK(f.chats.marker(c) == std::nullopt);
}

TEST_CASE("repairStaleMarkers without PostgreSQL configured fails without throwing") {
  test::CapturedLog log;
  Client client(test::clientOptions(test::redisUrl(), log));
  const auto result = client.repairStaleMarkers({{"00000000-0000-0000-0000-000000000001", "stream-a"}});
  CHECK(result.failed);
  CHECK(result.cleared == 0);
}

TEST_CASE("writeMarker sets the marker and clearMarker clears only its own") {
  RepairFixture f;
  Client client(f.options);
  const auto chat = f.chats.insert(std::nullopt);

  CHECK(client.writeMarker(chat, "stream-1"));
  CHECK(f.chats.marker(chat) == Marker("stream-1"));
  CHECK(client.writeMarker(chat, "stream-2"));  // step 2 of the writer protocol is unconditional
  CHECK(f.chats.marker(chat) == Marker("stream-2"));

  CHECK_FALSE(client.clearMarker(chat, "stream-1"));
  CHECK(f.chats.marker(chat) == Marker("stream-2"));
  CHECK(client.clearMarker(chat, "stream-2"));
  CHECK(f.chats.marker(chat) == std::nullopt);
  CHECK_FALSE(client.clearMarker(chat, "stream-2"));

  CHECK_FALSE(client.writeMarker("00000000-0000-0000-0000-000000000001", "stream-1"));  // no such chat
}

TEST_CASE("writeMarker stays within its documented bound when its connection is lost late and it is sent again") {
  RepairFixture f;
  f.options.postgres.acquireTimeout = 100ms;
  f.options.postgres.connectTimeout = 200ms;
  f.options.postgres.statementTimeout = 2000ms;  // the bound: 100 + 200 + 2000 ms
  Client client(f.options);
  const auto chat = f.chats.insert(std::nullopt);
  REQUIRE(client.writeMarker(chat, "warm-up"));  // a connection that has served: a lost one is retried

  test::TestDb blocker;  // another connection's open transaction holds the row
  blocker.exec("BEGIN");
  blocker.exec("SELECT id FROM " + f.chats.name() + " WHERE id = $1 FOR UPDATE", {chat});
  test::TestDb admin;
  const auto waiter = [&] {
    return admin.scalar("SELECT pid::text FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                        {f.chats.name()});
  };
  const auto start = std::chrono::steady_clock::now();
  std::optional<streamlock::ErrorCode> failed;
  std::thread writer([&] {
    try {
      (void)client.writeMarker(chat, "stream-1");
    } catch (const streamlock::Error& e) {
      failed = e.code();
    }
  });
  const bool waiting = test::waitUntil([&] { return waiter().has_value(); }, 2s);
  // The connection is lost late in the call, 1.7 s in: the statement is sent once more, on a fresh
  // connection, with what is left of the bound, not a whole statement timeout of its own.
  std::this_thread::sleep_until(start + 1700ms);
  if (const auto pid = waiter()) admin.exec("SELECT pg_terminate_backend($1::int)", {*pid});
  writer.join();
  const auto elapsed = test::elapsedSince(start);
  blocker.exec("ROLLBACK");

  REQUIRE(waiting);
  CHECK(failed.has_value());
  CHECK(elapsed < 3000ms);  // 2.3 s and a margin; sent again with 2 s of its own, it took 3.7 s
  // Whether the timed-out UPDATE still ran once the row was free is not known (the server drops a
  // statement only when it notices its connection closed): that is what Timeout means for a write.
}

TEST_CASE("writeMarker without PostgreSQL configured throws Error") {
  test::CapturedLog log;
  Client client(test::clientOptions("", log));
  CHECK_THROWS_AS(client.writeMarker("00000000-0000-0000-0000-000000000001", "stream-1"), streamlock::Error);
  CHECK_THROWS_AS(client.clearMarker("00000000-0000-0000-0000-000000000001", "stream-1"), streamlock::Error);
}

TEST_CASE("a crashed writer's marker is shown active while its lock lives and repaired after") {
  RepairFixture f;
  Client writer(f.options);
  Client reader(f.options);
  const auto chat = f.chats.insert(std::nullopt);

  auto lock = writer.acquireStreamLock(chat, "stream-1");
  REQUIRE(lock);
  REQUIRE(writer.writeMarker(chat, "stream-1"));
  const auto whileStreaming = reader.reconcileChatStreamMarkers(f.chats.candidates({chat}), withRepair);
  REQUIRE(whileStreaming.markers.size() == 1);
  CHECK(whileStreaming.markers[0].state == MarkerState::Active);
  CHECK(whileStreaming.repair.cleared == 0);

  // The writer dies before clearing the marker; its lock expires.
  f.redis.expireNow(test::lockKey(f.options, chat));
  const auto afterCrash = reader.reconcileChatStreamMarkers(f.chats.candidates({chat}), withRepair);
  REQUIRE(afterCrash.markers.size() == 1);
  CHECK(afterCrash.markers[0].state == MarkerState::Inactive);
  CHECK(afterCrash.repair.cleared == 1);
  CHECK(f.chats.marker(chat) == std::nullopt);
}
