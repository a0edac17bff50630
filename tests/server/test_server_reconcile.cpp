// The contract's reconciliation table, seen through the HTTP API: markers in the database, locks in
// Redis, and what GET /api/mothership/chats[/{chatId}] reports and repairs.

#include <signal.h>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;

namespace {

const std::string kChats = "/api/mothership/chats";

Json activeStreamIdIn(const Json& list, const std::string& chatId) {
  for (const auto& chat : list["data"]) {
    if (chat["id"] == chatId) return chat["activeStreamId"];
  }
  throw std::runtime_error("chat " + chatId + " is not in the list");
}

std::string updatedAt(Sql& sql, const std::string& chatId) {
  return *sql.value("SELECT updated_at::text FROM copilot_chats WHERE id = $1::uuid", {chatId});
}

struct World {
  Sql& sql = TestDatabase::get().sql();
  Seed seed{sql};
  Caller caller = newCaller(seed);
};

}  // namespace

TEST_CASE("a stuck marker without a lock is reported inactive and repaired in the database", "[server][reconcile]") {
  Server server(sharedRedisFlags());
  World world;
  const auto listed = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  const auto single = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  world.seed.setMarker(listed, "stream-dead-1");
  world.seed.setMarker(single, "stream-dead-2");
  const auto listedUpdatedAt = updatedAt(world.sql, listed);

  const auto list = server.get(chatListPath(world.caller.workspaceId), world.caller.token);
  REQUIRE(list.status == 200);
  CHECK(activeStreamIdIn(list.json(), listed).is_null());
  // The repair completed before the response was sent, and touched only the marker.
  CHECK(world.seed.marker(listed) == std::nullopt);
  CHECK(updatedAt(world.sql, listed) == listedUpdatedAt);

  const auto chat = server.get(kChats + "/" + single, world.caller.token);
  REQUIRE(chat.status == 200);
  CHECK(chat.json()["chat"]["activeStreamId"].is_null());
  CHECK(world.seed.marker(single) == std::nullopt);
}

TEST_CASE("a live lock keeps the chat active and its marker in place", "[server][reconcile]") {
  Server server(sharedRedisFlags());
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  world.seed.setMarker(chatId, "stream-live");
  redis.setLock(chatId, "stream-live");

  const auto list = server.get(chatListPath(world.caller.workspaceId), world.caller.token);
  REQUIRE(list.status == 200);
  CHECK(activeStreamIdIn(list.json(), chatId) == "stream-live");
  const auto chat = server.get(kChats + "/" + chatId, world.caller.token);
  REQUIRE(chat.status == 200);
  CHECK(chat.json()["chat"]["activeStreamId"] == "stream-live");
  CHECK(world.seed.marker(chatId) == std::optional<std::string>("stream-live"));
  redis.deleteLock(chatId);
}

TEST_CASE("the lock owner wins over a stale marker value", "[server][reconcile]") {
  Server server(sharedRedisFlags());
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  world.seed.setMarker(chatId, "stream-old");
  redis.setLock(chatId, "stream-new");

  const auto list = server.get(chatListPath(world.caller.workspaceId), world.caller.token);
  CHECK(activeStreamIdIn(list.json(), chatId) == "stream-new");
  CHECK(server.get(kChats + "/" + chatId, world.caller.token).json()["chat"]["activeStreamId"] == "stream-new");
  CHECK(world.seed.marker(chatId) == std::optional<std::string>("stream-old"));  // not a stale marker
  redis.deleteLock(chatId);
}

TEST_CASE("the teardown window: a lock without a marker is inactive", "[server][reconcile]") {
  Server server(sharedRedisFlags());
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  redis.setLock(chatId, "stream-finishing");

  CHECK(activeStreamIdIn(server.get(chatListPath(world.caller.workspaceId), world.caller.token).json(), chatId)
            .is_null());
  CHECK(server.get(kChats + "/" + chatId, world.caller.token).json()["chat"]["activeStreamId"].is_null());
  CHECK(redis.lockOwner(chatId) == std::optional<std::string>("stream-finishing"));
  redis.deleteLock(chatId);
}

TEST_CASE("archived scope: activeStreamId is null and the marker is neither reconciled nor repaired",
          "[server][reconcile]") {
  Server server(sharedRedisFlags());
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto stale = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  const auto locked = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  world.seed.setMarker(stale, "stream-archived-stale");
  world.seed.setMarker(locked, "stream-archived-live");
  redis.setLock(locked, "stream-archived-live");
  world.sql.exec("UPDATE copilot_chats SET deleted_at = now() WHERE id IN ($1::uuid, $2::uuid)", {stale, locked});

  const auto list = server.get(chatListPath(world.caller.workspaceId, "archived"), world.caller.token);
  REQUIRE(list.status == 200);
  CHECK(activeStreamIdIn(list.json(), stale).is_null());
  CHECK(activeStreamIdIn(list.json(), locked).is_null());
  CHECK(world.seed.marker(stale) == std::optional<std::string>("stream-archived-stale"));
  redis.deleteLock(locked);
}

TEST_CASE("Redis stopped: 200 with the markers preserved and nothing repaired", "[server][reconcile][outage]") {
  PrivateRedis privateRedis;
  Server server({"--redis-url", privateRedis.url()});
  World world;
  Redis redis(privateRedis.url());
  const auto live = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  const auto stale = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  const auto idle = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  world.seed.setMarker(live, "stream-live");
  world.seed.setMarker(stale, "stream-stale");
  redis.setLock(live, "stream-live");

  const auto before = server.get(chatListPath(world.caller.workspaceId), world.caller.token).json();
  REQUIRE(activeStreamIdIn(before, live) == "stream-live");
  REQUIRE(activeStreamIdIn(before, stale).is_null());
  world.seed.setMarker(stale, "stream-stale");  // stuck again, for the outage

  privateRedis.kill();
  for (int round = 0; round < 5; ++round) {  // through the breaker opening, too
    const auto list = server.get(chatListPath(world.caller.workspaceId), world.caller.token);
    REQUIRE(list.status == 200);
    CHECK(activeStreamIdIn(list.json(), live) == "stream-live");
    CHECK(activeStreamIdIn(list.json(), stale) == "stream-stale");
    CHECK(activeStreamIdIn(list.json(), idle).is_null());
  }
  const auto chat = server.get(kChats + "/" + stale, world.caller.token);
  REQUIRE(chat.status == 200);
  CHECK(chat.json()["chat"]["activeStreamId"] == "stream-stale");
  CHECK(world.seed.marker(stale) == std::optional<std::string>("stream-stale"));

  const auto health = server.get("/healthz");
  CHECK(health.status == 200);
  CHECK(health.json()["redis"] == "unknown");
}

TEST_CASE("no Redis configured: healthz says disabled and markers are preserved", "[server][reconcile]") {
  Server server;
  World world;
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  world.seed.setMarker(chatId, "stream-unverifiable");

  const auto health = server.get("/healthz");
  REQUIRE(health.status == 200);
  CHECK(health.json()["redis"] == "disabled");
  const auto list = server.get(chatListPath(world.caller.workspaceId), world.caller.token);
  REQUIRE(list.status == 200);
  CHECK(activeStreamIdIn(list.json(), chatId) == "stream-unverifiable");
  CHECK(world.seed.marker(chatId) == std::optional<std::string>("stream-unverifiable"));
}

TEST_CASE("a killed stream_worker's chat turns inactive once its lock expires, and is repaired",
          "[server][reconcile][worker]") {
  Server server(sharedRedisFlags());
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  const std::string streamId = "stream-worker-crash";

  Subprocess worker({workerBinary(), "--chat-id", chatId, "--stream-id", streamId, "--duration-s", "600",
                     "--lock-ttl-s", "2", "--database-url", TestDatabase::get().conninfo(), "--redis-url",
                     requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  const auto chatActive = [&] {
    return server.get(kChats + "/" + chatId, world.caller.token).json()["chat"]["activeStreamId"] == streamId;
  };
  REQUIRE(eventually(chatActive));
  worker.signal(SIGKILL);
  REQUIRE(worker.wait(std::chrono::seconds{10}).has_value());
  // Killed: nothing cleared the marker; the lock is still there until its TTL runs out.
  CHECK(world.seed.marker(chatId) == std::optional<std::string>(streamId));

  const bool inactive = eventually([&] {
    return activeStreamIdIn(server.get(chatListPath(world.caller.workspaceId), world.caller.token).json(), chatId)
        .is_null();
  });
  REQUIRE(inactive);
  CHECK(redis.lockOwner(chatId) == std::nullopt);
  CHECK(world.seed.marker(chatId) == std::nullopt);
}

TEST_CASE("a stream_worker that runs to the end clears its marker and releases its lock",
          "[server][reconcile][worker]") {
  const Server server(sharedRedisFlags());  // creates the schema
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  Subprocess worker({workerBinary(), "--chat-id", chatId, "--duration-s", "1", "--database-url",
                     TestDatabase::get().conninfo(), "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  CHECK(worker.wait(std::chrono::seconds{60}) == std::optional<int>(0));
  CHECK(worker.readAll(std::chrono::seconds{5}).find("marker written") != std::string::npos);
  CHECK(world.seed.marker(chatId) == std::nullopt);
  CHECK(redis.lockOwner(chatId) == std::nullopt);

  // A second worker on a chat whose lock is held gives up without touching the marker.
  redis.setLock(chatId, "someone-else");
  Subprocess busy({workerBinary(), "--chat-id", chatId, "--duration-s", "1", "--database-url",
                   TestDatabase::get().conninfo(), "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  CHECK(busy.wait(std::chrono::seconds{60}) == std::optional<int>(3));
  CHECK(world.seed.marker(chatId) == std::nullopt);
  redis.deleteLock(chatId);
}

namespace {

// How many SET commands a Redis server has run (INFO commandstats).
long long setCalls(Redis& redis) {
  const std::string stats = redis.info("commandstats");
  const auto at = stats.find("cmdstat_set:");
  if (at == std::string::npos) return 0;
  const auto calls = stats.find("calls=", at);
  return std::stoll(stats.substr(calls + 6));
}

}  // namespace

TEST_CASE("a stream_worker stopped with SIGTERM clears its marker, releases its lock and exits 0",
          "[server][reconcile][worker]") {
  const Server server(sharedRedisFlags());  // creates the schema
  World world;
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  Subprocess worker({workerBinary(), "--chat-id", chatId, "--stream-id", "stream-sigterm", "--duration-s", "600",
                     "--database-url", TestDatabase::get().conninfo(), "--redis-url",
                     requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  bool marked = false;
  while (const auto line = worker.readLine(std::chrono::seconds{30})) {
    if (line->find("marker written") != std::string::npos) {
      marked = true;
      break;
    }
  }
  REQUIRE(marked);
  CHECK(world.seed.marker(chatId) == std::optional<std::string>("stream-sigterm"));
  CHECK(redis.lockOwner(chatId) == std::optional<std::string>("stream-sigterm"));

  worker.signal(SIGTERM);
  CHECK(worker.wait(std::chrono::seconds{30}) == std::optional<int>(0));
  CHECK(world.seed.marker(chatId) == std::nullopt);
  CHECK(redis.lockOwner(chatId) == std::nullopt);
}

TEST_CASE("a stream_worker waiting for a busy lock (--wait-lock-ms) stops at once on SIGTERM, and never starts",
          "[server][reconcile][worker]") {
  const Server server(sharedRedisFlags());  // creates the schema
  World world;
  PrivateRedis privateRedis;  // its own, so that its SET count is the worker's alone
  Redis redis(privateRedis.url());
  const auto chatId = world.seed.chat(world.caller.userId, world.caller.workspaceId);
  redis.setLock(chatId, "someone-else", 600);
  const auto setsBefore = setCalls(redis);

  Subprocess worker({workerBinary(), "--chat-id", chatId, "--stream-id", "stream-waiting", "--duration-s", "600",
                     "--wait-lock-ms", "120000", "--database-url", TestDatabase::get().conninfo(), "--redis-url",
                     privateRedis.url()});
  // The worker is waiting once its SET NX has been refused (its signals are blocked by then).
  REQUIRE(eventually([&] { return setCalls(redis) > setsBefore; }));

  worker.signal(SIGTERM);
  // Stopped within seconds, not after the 120 s wait, and as a SIGTERM: exit 0.
  CHECK(worker.wait(std::chrono::seconds{10}) == std::optional<int>(0));
  // Told to stop, it never started a stream: no marker, and the other stream's lock untouched.
  CHECK(world.seed.marker(chatId) == std::nullopt);
  CHECK(redis.lockOwner(chatId) == std::optional<std::string>("someone-else"));

  // The other stream ends while a second waiting worker is told to stop: that one must not take the
  // chat afterwards either (SIGTERM first, then the lock frees up).
  Subprocess second({workerBinary(), "--chat-id", chatId, "--stream-id", "stream-waiting-2", "--duration-s", "600",
                     "--wait-lock-ms", "120000", "--database-url", TestDatabase::get().conninfo(), "--redis-url",
                     privateRedis.url()});
  const auto setsNow = setCalls(redis);
  REQUIRE(eventually([&] { return setCalls(redis) > setsNow; }));
  second.signal(SIGTERM);
  redis.deleteLock(chatId);
  CHECK(second.wait(std::chrono::seconds{10}) == std::optional<int>(0));
  CHECK(second.readAll(std::chrono::seconds{5}).find("marker written") == std::string::npos);
  CHECK(world.seed.marker(chatId) == std::nullopt);
  CHECK(redis.lockOwner(chatId) == std::nullopt);
}
