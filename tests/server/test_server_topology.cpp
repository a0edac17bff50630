// Issue 11 on the demo server: a hung first PostgreSQL host (the server answers /healthz within
// 3 s of starting), a promote without a server restart (it answers again within 3 s of the
// promote), and every Redis URL form (the shared cluster and sentinel setup of tests/run.sh).
// Private topologies come from tests/support (streamlock_test_servers).

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "env.h"
#include "harness.h"
#include "net_faults.h"
#include "pg_pair.h"
#include "redis_client.h"
#include "redis_cluster.h"

using namespace servertest;
namespace st = streamlock::test;
using Clock = std::chrono::steady_clock;

namespace {

long long msSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

std::unique_ptr<Server> startServer(const std::vector<std::string>& flags, const std::string& databaseUrl) {
  try {
    return std::make_unique<Server>(flags, databaseUrl);
  } catch (const std::exception& error) {
    FAIL("mothership_server did not start: " << error.what());
  }
  return nullptr;
}

}  // namespace

TEST_CASE("a hung first PostgreSQL host: the server answers /healthz within 3 s of starting", "[server][topology]") {
  st::SilentListener hung(st::SilentListener::Mode::Accept);
  auto& database = TestDatabase::get();  // created before the clock starts
  const std::string conninfo = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(hung.port()) + "," +
                               requireEnv("STREAMLOCK_TEST_PG_PORT") + " dbname=" + database.name() +
                               " user=postgres target_session_attrs=read-write";
  const auto start = Clock::now();
  const auto server = startServer({}, conninfo);
  const bool healthy = eventually([&] { return server->get("/healthz").status == 200; }, std::chrono::seconds{10});
  const auto took = msSince(start);
  std::printf("hung first PostgreSQL host: /healthz 200 %lld ms after the server was started\n", took);
  CHECK(healthy);
  CHECK(took < 3000);
  // Requests that need the database answer at once too.
  Seed seed(database.sql());
  const auto caller = newCaller(seed);
  const auto listStart = Clock::now();
  CHECK(server->get(chatListPath(caller.workspaceId), caller.token).status == 200);
  CHECK(msSince(listStart) < 1000);
}

TEST_CASE("a promote without a server restart: the server answers again within 3 s of the promote",
          "[server][topology]") {
  st::PgStandbyPair pair;
  const auto server = startServer({}, pair.failoverConninfo());
  REQUIRE(eventually([&] { return server->get("/healthz").status == 200; }, std::chrono::seconds{10}));

  pair.stopPrimary();
  const auto stopped = Clock::now();
  REQUIRE(eventually([&] { return server->get("/healthz").status == 503; }, std::chrono::seconds{10}));
  std::printf("primary stopped: /healthz 503 after %lld ms\n", msSince(stopped));

  pair.promoteStandby();
  const auto promoted = Clock::now();
  const bool healthy = eventually([&] { return server->get("/healthz").status == 200; }, std::chrono::seconds{10});
  const auto took = msSince(promoted);
  std::printf("promote: /healthz 200 again %lld ms after the promote\n", took);
  CHECK(healthy);
  CHECK(took < 3000);
  CHECK(server->process().running());
  // The endpoints work on the new primary (the schema was replicated before the failover).
  Sql sql(pair.standbyConninfo());
  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  CHECK(server->get(chatListPath(caller.workspaceId), caller.token).status == 200);
  CHECK(server->get("/api/mothership/chats/" + chatId, caller.token).status == 200);
}

TEST_CASE("the demo server serves a cluster URL and a sentinel URL", "[server][topology]") {
  std::string url;
  std::function<void(const std::string&, const std::string&)> setLock;
  std::unique_ptr<st::ClusterView> cluster;
  std::unique_ptr<st::TestRedis> master;
  SECTION("redis-cluster://") {
    url = requireEnv("STREAMLOCK_TEST_CLUSTER_URL");
    std::vector<int> seeds;
    for (const auto& [host, port] : st::clusterNodes()) seeds.push_back(port);
    cluster = std::make_unique<st::ClusterView>(seeds);
    setLock = [&](const std::string& key, const std::string& value) { cluster->set(key, value, 60000); };
  }
  SECTION("redis-sentinel://") {
    url = requireEnv("STREAMLOCK_TEST_SENTINEL_URL");
    master = std::make_unique<st::TestRedis>("127.0.0.1", st::sentinelMasterPort());
    setLock = [&](const std::string& key, const std::string& value) { master->setPx(key, value, 60000); };
  }
  INFO("redis url " << url);
  const auto server = startServer({"--redis-url", url}, TestDatabase::get().conninfo());
  const auto health = server->get("/healthz");
  CHECK(health.status == 200);
  CHECK(health.json()["redis"] == "verified");

  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto live = seed.chat(caller.userId, caller.workspaceId, "live");
  const auto stale = seed.chat(caller.userId, caller.workspaceId, "stale");
  seed.setMarker(live, "stream-live");
  seed.setMarker(stale, "stream-gone");
  setLock(lockKey(live), "stream-live");
  const auto liveChat = server->get("/api/mothership/chats/" + live, caller.token);
  REQUIRE(liveChat.status == 200);
  CHECK(liveChat.json()["chat"]["activeStreamId"] == "stream-live");
  const auto staleChat = server->get("/api/mothership/chats/" + stale, caller.token);
  REQUIRE(staleChat.status == 200);
  CHECK(staleChat.json()["chat"]["activeStreamId"].is_null());  // verified: no lock
  CHECK_FALSE(seed.marker(stale).has_value());                    // and repaired
}
