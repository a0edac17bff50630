// The test infrastructure of issue 11 checks itself, without the library: the key hash slot, the
// private cluster's failovers and migrations, the sentinel setup's failover, the PostgreSQL pair's
// promote and the hung listener behave as the topology tests assume. When a topology test fails,
// this says whether the harness or the library is at fault.
#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "env.h"
#include "pg.h"
#include "net_faults.h"
#include "pg_pair.h"
#include "redis_cluster.h"
#include "redis_sentinel.h"
#include "watchdog.h"

using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

std::string text(const redisReply* reply) {
  return reply != nullptr && reply->str != nullptr ? std::string(reply->str, reply->len) : std::string();
}

}  // namespace

TEST_CASE("harness: key hash slots agree with CLUSTER KEYSLOT of the shared cluster") {
  CHECK(test::keySlot("123456789") == 0x31C3);  // the specification's CRC16 check value
  CHECK(test::keySlot("foo") == 12182);
  CHECK(test::keySlot("{user1000}.following") == test::keySlot("{user1000}.followers"));
  CHECK(test::keySlot("foo{{bar}}zap") == test::keySlot("{bar"));
  std::vector<int> seeds;
  for (const auto& [host, port] : test::clusterNodes()) seeds.push_back(port);
  test::ClusterView view(seeds);
  std::vector<std::string> keys{"foo{}{bar}", "foo{{bar}}zap", "foo{bar}{zap}", "{}", "{", "}{x}", ""};
  for (int i = 0; i < 300; ++i) {
    keys.push_back((i % 3 == 0 ? "copilot:chat-stream-lock:" : "x{" + std::to_string(i % 7) + "}") + test::uniqueId() +
                   (i % 5 == 0 ? "{" : ""));
  }
  for (const auto& key : keys) {
    INFO("key '" << key << "'");
    CHECK(static_cast<long long>(test::keySlot(key)) == view.command(seeds.front(), {"CLUSTER", "KEYSLOT", key})->integer);
  }
  CHECK(view.masterPorts().size() == 3);
}

TEST_CASE("harness: a private cluster fails over, and a replica without its link loses a write") {
  test::Watchdog watchdog("harness cluster", 120s);
  test::RedisCluster cluster(test::RedisCluster::Settings{2000, {}, {}});
  auto& view = cluster.view();
  REQUIRE(view.masterPorts().size() == 3);
  const int first = view.masterPorts()[0];
  const std::string key = "{" + test::uniqueId() + "}";
  view.set(key, "v1");
  const int owner = view.masterOfKey(key);

  // Manual failover: the replica becomes the master of those slots, with the data.
  REQUIRE(view.command(owner, {"WAIT", "1", "5000"})->integer == 1);
  const int promoted = cluster.failover(owner);
  CHECK(view.masterOfKey(key) == promoted);
  CHECK(view.get(key) == std::optional<std::string>("v1"));
  // NOSCRIPT on the new master: script caches are per node.
  const std::string sha = text(view.command(first, {"SCRIPT", "LOAD", "return 1"}).get());
  if (first != promoted) {
    CHECK(text(view.command(promoted, {"EVALSHA", sha, "0"}).get()).rfind("NOSCRIPT", 0) == 0);
  }

  // A killed master is replaced after cluster-node-timeout.
  const int second = view.masterPorts()[1];
  const int replica = view.replicaOf(second);
  const auto killed = std::chrono::steady_clock::now();
  cluster.kill(second);
  cluster.waitConverged(30s, false);
  const auto masters = view.masterPorts();
  CHECK(std::find(masters.begin(), masters.end(), replica) != masters.end());
  CHECK(test::elapsedSince(killed) < 15s);

  // A replica whose link is broken misses a write; TAKEOVER makes it the master: the write is lost.
  int third = 0;
  for (const int master : masters) {
    if (master != replica && master != promoted) third = master;
  }
  REQUIRE(third != 0);
  const int thirdReplica = view.replicaOf(third);
  view.command(thirdReplica, {"CONFIG", "SET", "masteruser", "streamlock-test-no-such-user"});
  view.command(thirdReplica, {"CONFIG", "SET", "masterauth", "nothing"});
  view.command(third, {"CLIENT", "KILL", "TYPE", "replica"});
  REQUIRE(test::waitUntil([&] {
    return text(view.command(thirdReplica, {"INFO", "replication"}).get()).find("master_link_status:down") !=
           std::string::npos;
  }));
  const std::string lostKey = test::chatIdInSlot("k:", view.slotsOf(third).front().first, "lost");
  view.set("k:" + lostKey, "written");
  CHECK_FALSE(view.getOnReplica(thirdReplica, "k:" + lostKey).has_value());
  CHECK(cluster.failover(third, "TAKEOVER") == thirdReplica);
  CHECK_FALSE(view.get("k:" + lostKey).has_value());
}

TEST_CASE("harness: a slot migration answers ASK and TRYAGAIN, then MOVED") {
  test::Watchdog watchdog("harness migration", 60s);
  test::RedisCluster cluster;
  auto& view = cluster.view();
  const int from = view.masterPorts()[0], to = view.masterPorts()[1];
  const unsigned slot = view.slotsOf(from).front().first + 7;
  const std::string a = "m:" + test::chatIdInSlot("m:", slot, "a"), b = "m:" + test::chatIdInSlot("m:", slot, "b");
  view.set(a, "A");
  view.set(b, "B");
  view.command(to, {"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", view.idOf(from)});
  view.command(from, {"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", view.idOf(to)});
  REQUIRE(text(view.command(from, {"MIGRATE", "127.0.0.1", std::to_string(to), a, "0", "5000"}).get()) == "OK");
  CHECK(text(view.command(from, {"GET", a}).get()).rfind("ASK " + std::to_string(slot), 0) == 0);
  CHECK(text(view.command(from, {"GET", b}).get()) == "B");
  CHECK(text(view.command(from, {"MGET", a, b}).get()).rfind("TRYAGAIN", 0) == 0);
  CHECK(text(view.command(to, {"GET", a}).get()).rfind("MOVED", 0) == 0);  // without ASKING
  view.command(to, {"ASKING"});
  CHECK(text(view.command(to, {"GET", a}).get()) == "A");
  REQUIRE(text(view.command(from, {"MIGRATE", "127.0.0.1", std::to_string(to), b, "0", "5000"}).get()) == "OK");
  for (const int master : view.masterPorts()) {
    view.command(master, {"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", view.idOf(to)});
  }
  CHECK(text(view.command(from, {"GET", a}).get()).rfind("MOVED " + std::to_string(slot), 0) == 0);
  view.refresh();
  CHECK(view.get(b) == std::optional<std::string>("B"));
}

TEST_CASE("harness: a private sentinel setup fails over on a kill, and the old master comes back writable") {
  test::Watchdog watchdog("harness sentinel", 120s);
  test::SentinelSetup setup;
  const int old = setup.initialMasterPort();
  CHECK(setup.masterPortBySentinels() == old);
  CHECK(setup.role(old) == "master");
  const auto killed = std::chrono::steady_clock::now();
  setup.server(old).kill();
  const int fresh = setup.waitForNewMaster(old, 30s);
  CHECK(test::elapsedSince(killed) < 10s);
  CHECK(fresh != old);
  setup.server(old).start();
  CHECK(setup.role(old) == "master");  // restarted without replicaof: a master, for now
  CHECK(text(setup.command(old, {"SET", "k", "v"}).get()) == "OK");
}

TEST_CASE("harness: a private PostgreSQL pair streams and promotes, and a hung listener never answers") {
  test::Watchdog watchdog("harness postgres", 120s);
  const auto start = std::chrono::steady_clock::now();
  test::PgStandbyPair pair;
  std::printf("PgStandbyPair built in %lld ms\n", static_cast<long long>(test::elapsedSince(start).count()));
  test::TestDb(pair.primaryConninfo()).exec("CREATE TABLE t (x int)");
  test::TestDb standby(pair.standbyConninfo());
  CHECK(standby.scalar("SELECT pg_is_in_recovery()::text") == std::optional<std::string>("true"));
  pair.stopPrimary();
  pair.promoteStandby();
  test::TestDb promoted(pair.standbyConninfo());
  CHECK(promoted.scalar("SELECT pg_is_in_recovery()::text") == std::optional<std::string>("false"));
  promoted.exec("INSERT INTO t VALUES (1)");

  test::SilentListener hung(test::SilentListener::Mode::Accept);
  const auto connectStart = std::chrono::steady_clock::now();
  PGconn* conn = PQconnectdb(("host=127.0.0.1 port=" + std::to_string(hung.port()) +
                              " dbname=postgres user=postgres connect_timeout=2").c_str());
  const auto took = test::elapsedSince(connectStart);
  CHECK(PQstatus(conn) == CONNECTION_BAD);
  PQfinish(conn);
  CHECK(took >= 1900ms);  // the TCP connect succeeded and nothing answered until libpq gave up
  CHECK(hung.accepted() == 1);
}

TEST_CASE("harness: the read-event measure tells one pipelined write per node from a round trip per key") {
  // What cluster."lookups of 1,000 chats ..." relies on, with a hand-written client in the
  // library's place: behind a DEBUG SLEEP, one pipelined write of a node's GETs costs that node a
  // few read events (16 KB each); a round trip per key costs one per key.
  test::Watchdog watchdog("harness round-trip measure", 120s);
  test::RedisCluster cluster;
  auto& view = cluster.view();
  std::map<int, std::vector<std::vector<std::string>>> gets;
  for (int i = 0; i < 1000; ++i) {
    const std::string key = "copilot:chat-stream-lock:" + test::uniqueId() + "-" + std::to_string(i);
    gets[view.masterOfKey(key)].push_back({"GET", key});
  }
  auto reads = [&](int port) { return view.infoField(port, "stats", "total_reads_processed"); };
  auto lookedUp = [&](int port) {
    return view.infoField(port, "stats", "keyspace_hits") + view.infoField(port, "stats", "keyspace_misses");
  };
  std::map<int, long long> readsBefore, lookedUpBefore;
  for (const auto& [port, commands] : gets) {
    lookedUpBefore[port] = lookedUp(port);
    readsBefore[port] = reads(port);
  }
  std::vector<std::thread> threads;
  for (const auto& [port, commands] : gets) {
    const int node = port;
    threads.emplace_back([node] { test::TestRedis("127.0.0.1", node).ok({"DEBUG", "SLEEP", "0.3"}); });
  }
  std::this_thread::sleep_for(50ms);
  for (auto& [port, commands] : gets) {
    const int node = port;
    auto* list = &commands;
    threads.emplace_back([node, list] {
      test::TestRedis("127.0.0.1", node).pipeline(*list, [](const redisReply*, const std::vector<std::string>&) {});
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& [port, commands] : gets) {
    const long long pipelinedReads = reads(port) - readsBefore[port] - 2;  // DEBUG SLEEP, this INFO
    std::printf("node %d: %zu GETs pipelined behind a DEBUG SLEEP: %lld read events\n", port, commands.size(),
                pipelinedReads);
    CHECK(pipelinedReads <= 4 + static_cast<long long>(commands.size()) / 80);  // the bound cluster uses
    CHECK(lookedUp(port) - lookedUpBefore[port] == static_cast<long long>(commands.size()));
  }
  // A round trip per key, on one node.
  const int port = gets.begin()->first;
  const auto& commands = gets.begin()->second;
  const long long before = reads(port);
  test::TestRedis one("127.0.0.1", port);
  for (const auto& command : commands) one.command(command);
  const long long perKey = reads(port) - before - 1;
  std::printf("node %d: %zu GETs one by one: %lld read events\n", port, commands.size(), perKey);
  CHECK(perKey >= static_cast<long long>(commands.size()));
}
