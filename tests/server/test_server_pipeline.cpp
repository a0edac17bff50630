// The server's PostgreSQL pipelines: concurrent requests share a few connections, each statement
// still its own and answered to its own request; --pg-pipeline-depth and its variable are honoured
// and checked; a statement stuck on a lock holds back only what the documented stall rule says
// (a connection whose oldest statement has run for 100 ms takes no more).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

using Clock = std::chrono::steady_clock;

const std::string kChats = "/api/mothership/chats";

// The test database's conninfo with an application_name of its own, so that the server's backends
// can be told from everything else in pg_stat_activity.
std::string taggedConninfo(const std::string& tag) {
  return TestDatabase::get().conninfo() + " application_name=" + tag;
}

std::string uniqueTag(const char* what) {
  static std::atomic<int> next{0};
  return std::string(what) + "_" + std::to_string(::getpid()) + "_" + std::to_string(next++);
}

int backends(Sql& sql, const std::string& tag) {
  return std::stoi(*sql.value("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {tag}));
}

// Calls of the server's statements that read `needle`, from pg_stat_statements in the admin
// database (tests/run.sh loads the extension there).
long long statementCalls(const std::string& needle) {
  Sql admin(requireEnv("STREAMLOCK_TEST_DATABASE_URL"));
  return std::stoll(*admin.value(
      "SELECT coalesce(sum(calls), 0)::bigint::text FROM pg_stat_statements "
      "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) AND query LIKE '%' || $2 || '%'",
      {TestDatabase::get().name(), needle}));
}

struct Timed {
  Response response;
  milliseconds elapsed{0};
};

// `count` GETs of the paths (round robin), each on its own keep-alive connection that is opened
// (with a /healthz) before all of them are sent at once.
std::vector<Timed> simultaneousGets(int port, const std::vector<std::string>& paths, const std::string& token,
                                    int count) {
  std::vector<Timed> results(static_cast<std::size_t>(count));
  std::atomic<int> connected{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&, i] {
      httplib::Client client("127.0.0.1", port);
      client.set_keep_alive(true);
      client.set_read_timeout(30, 0);
      (void)client.Get("/healthz");
      ++connected;
      while (!go.load()) std::this_thread::yield();
      const auto start = Clock::now();
      const auto result =
          client.Get(paths[static_cast<std::size_t>(i) % paths.size()].c_str(), {{"Authorization", "Bearer " + token}});
      auto& out = results[static_cast<std::size_t>(i)];
      out.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
      if (result) {
        out.response.status = result->status;
        out.response.body = result->body;
      }
    });
  }
  while (connected.load() < count) std::this_thread::sleep_for(milliseconds{5});
  go = true;
  for (auto& thread : threads) thread.join();
  return results;
}

}  // namespace

TEST_CASE("32 concurrent requests on a pool of one pipelined connection: one statement and the right answer each", "[server][pipeline]") {
  const auto tag = uniqueTag("pipeline_share");
  Server server({"--pg-pool-size", "1", "--pg-pipeline-depth", "32", "--redis-url",
                 requireEnv("STREAMLOCK_TEST_REDIS_URL")},
                taggedConninfo(tag));
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  // Four callers, each with a live chat and an idle one: an answer mixed up between requests shows.
  struct Owner {
    Caller who;
    std::string live, idle;
  };
  std::vector<Owner> callers;
  for (int i = 0; i < 4; ++i) {
    Owner caller{newCaller(seed), {}, {}};
    caller.live = seed.chat(caller.who.userId, caller.who.workspaceId, "live " + std::to_string(i));
    caller.idle = seed.chat(caller.who.userId, caller.who.workspaceId, "idle " + std::to_string(i));
    seed.setMarker(caller.live, "stream-" + caller.live);
    redis.setLock(caller.live, "stream-" + caller.live);
    callers.push_back(caller);
  }
  for (const auto& caller : callers) {
    REQUIRE(server.get(chatListPath(caller.who.workspaceId), caller.who.token).status == 200);
  }
  const auto listCalls = statementCalls("AS allowed");
  const auto chatCalls = statementCalls("c.messages::text");

  // 8 requests per caller at once: 4 lists and 4 single chats each, 32 in all, on one connection.
  std::vector<Timed> all;
  for (const auto& caller : callers) {
    const auto results = simultaneousGets(
        server.port(), {chatListPath(caller.who.workspaceId), kChats + "/" + caller.live}, caller.who.token, 8);
    all.insert(all.end(), results.begin(), results.end());
  }
  for (std::size_t c = 0; c < callers.size(); ++c) {
    const auto& caller = callers[c];
    for (std::size_t i = 0; i < 8; ++i) {
      const auto& response = all[c * 8 + i].response;
      INFO("caller " << c << ", request " << i << ": " << response.body);
      REQUIRE(response.status == 200);
      const auto json = response.json();
      if (i % 2 == 0) {
        REQUIRE(json["data"].size() == 2);
        for (const auto& chat : json["data"]) {
          const bool live = chat["id"] == caller.live;
          CHECK((live || chat["id"] == caller.idle));
          CHECK(chat["activeStreamId"] == (live ? Json("stream-" + caller.live) : Json(nullptr)));
        }
      } else {
        CHECK(json["chat"]["id"] == caller.live);
        CHECK(json["chat"]["activeStreamId"] == "stream-" + caller.live);
      }
    }
  }
  // One statement per request, all on the pool's one connection (the repair pool never connected:
  // nothing was stale).
  CHECK(statementCalls("AS allowed") - listCalls == 16);
  CHECK(statementCalls("c.messages::text") - chatCalls == 16);
  CHECK(backends(sql, tag) == 1);
}

TEST_CASE("the pipeline depth comes from its variable or its flag: a blocked statement holds "
          "only its own request, and the ones pipelined behind it wait for it instead of the pool",
          "[server][pipeline]") {
  { const Server schema; }  // creates the tables
  auto& database = TestDatabase::get();
  Seed seed(database.sql());
  const auto caller = newCaller(seed);
  const auto path = chatListPath(caller.workspaceId);

  // Four requests sent together while a lock holds the chats table for longer than the pool wait
  // (2 s), on a pool of one connection. Returns how many were answered 200.
  const auto blockedBurst = [&](const Server& server) {
    REQUIRE(server.get(path, caller.token).status == 200);  // the pool's connection is open
    Sql locker(database.conninfo());
    locker.exec("BEGIN");
    locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
    std::vector<Timed> results;
    std::thread burst([&] { results = simultaneousGets(server.port(), {path}, caller.token, 4); });
    std::this_thread::sleep_for(milliseconds{2600});
    locker.exec("ROLLBACK");
    burst.join();
    int ok = 0;
    for (const auto& result : results) {
      INFO(result.response.body);
      CHECK((result.response.status == 200 || result.response.status == 503));
      ok += result.response.status == 200 ? 1 : 0;
    }
    return ok;
  };

  SECTION("STREAMLOCK_PG_PIPELINE_DEPTH=8: all four pipelined on the connection, all answered 200") {
    Server server({"--pg-pool-size", "1", "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")}, {},
                  {{"STREAMLOCK_PG_PIPELINE_DEPTH", "8"}});
    // The four must reach the connection within 100 ms of the first (the stall rule): on a busy
    // machine that can take a second try.
    int ok = 0;
    for (int attempt = 0; attempt < 3 && ok < 4; ++attempt) ok = blockedBurst(server);
    CHECK(ok == 4);
  }
  SECTION("--pg-pipeline-depth 1 wins over the variable: one at a time, the others give up after the pool wait") {
    Server server({"--pg-pool-size", "1", "--pg-pipeline-depth", "1", "--redis-url",
                   requireEnv("STREAMLOCK_TEST_REDIS_URL")},
                  {}, {{"STREAMLOCK_PG_PIPELINE_DEPTH", "8"}});
    CHECK(blockedBurst(server) == 1);
  }
}

TEST_CASE("a statement stuck on a lock: later requests go to other connections, then get the bounded 503",
          "[server][pipeline]") {
  Server server({"--pg-pool-size", "2", "--pg-pipeline-depth", "16", "--redis-url",
                 requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  auto& database = TestDatabase::get();
  Seed seed(database.sql());
  const auto caller = newCaller(seed);
  const auto path = chatListPath(caller.workspaceId);
  REQUIRE(server.get(path, caller.token).status == 200);

  Sql locker(database.conninfo());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
  Timed first, second, third;
  std::thread a([&] {
    const auto start = Clock::now();
    first.response = server.get(path, caller.token);
    first.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  });
  REQUIRE(eventually([&] { return waitingOnLocks(database.sql()) >= 1; }, seconds{10}));
  // Past the stall rule's 100 ms, the first connection takes no more: the next statement gets a
  // connection of its own (the pool has room for a second one) instead of queueing behind it.
  std::this_thread::sleep_for(milliseconds{300});
  std::thread b([&] { second.response = server.get(path, caller.token); });
  const bool secondOwnConnection = eventually([&] { return waitingOnLocks(database.sql()) >= 2; }, seconds{10});
  std::this_thread::sleep_for(milliseconds{300});
  // Both connections stuck, the pool full: the third waits the pool's 2 s, then 503.
  const auto start = Clock::now();
  third.response = server.get(path, caller.token);
  third.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  locker.exec("ROLLBACK");
  a.join();
  b.join();

  CHECK(secondOwnConnection);
  CHECK(first.response.status == 200);
  CHECK(second.response.status == 200);
  CHECK(third.response.status == 503);
  CHECK(third.response.body == R"({"error":"Service unavailable"})");
  CHECK(third.elapsed < milliseconds{6000});
  // Released: everything flows again.
  const auto after = simultaneousGets(server.port(), {path, path + "&scope=archived"}, caller.token, 16);
  for (const auto& result : after) CHECK(result.response.status == 200);
}

// (A test name must not start with "--": ctest would pass it to Catch as an option.)
TEST_CASE("the pipeline depth flag and STREAMLOCK_PG_PIPELINE_DEPTH are checked and listed", "[server][pipeline]") {
  const auto database = TestDatabase::get().conninfo();
  for (const char* bad : {"0", "1025", "-1", "8x", ""}) {
    INFO("--pg-pipeline-depth '" << bad << "'");
    Subprocess server({serverBinary(), "--database-url", database, "--pg-pipeline-depth", bad});
    CHECK(server.wait(seconds{10}) == std::optional<int>(2));
    CHECK(server.stderrText().find("--pg-pipeline-depth") != std::string::npos);
  }
  Subprocess fromVariable({serverBinary(), "--database-url", database}, {{"STREAMLOCK_PG_PIPELINE_DEPTH", "0"}});
  CHECK(fromVariable.wait(seconds{10}) == std::optional<int>(2));
  CHECK(fromVariable.stderrText().find("STREAMLOCK_PG_PIPELINE_DEPTH") != std::string::npos);

  Subprocess help({serverBinary(), "--help"});
  REQUIRE(help.wait(seconds{10}) == std::optional<int>(0));
  const auto text = help.readAll(seconds{5});
  CHECK(text.find("--pg-pipeline-depth N") != std::string::npos);
  CHECK(text.find("STREAMLOCK_PG_PIPELINE_DEPTH") != std::string::npos);
}
