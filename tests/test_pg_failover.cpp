// Issue 11, PostgreSQL failover through Client::postgres(): a hung first host of a multi-host
// conninfo (accepts TCP, never answers) costs one per-host attempt (500 ms by default), not the
// whole connect deadline, and is tried last for a while afterwards; target_session_attrs=read-write
// skips a standby listed first; a promote is followed without restarting the Client.
//
// The shared primary and standby of tests/run.sh serve the read-only case; the promote uses a
// private PgStandbyPair (tests/support/pg_pair.h, 3-5 s to build). The demo server's side of these
// cases is in tests/server/test_server_topology.cpp.
#define CATCH_CONFIG_ENABLE_ALL_STRINGMAKERS
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capture_log.h"
#include "env.h"
#include "pg.h"
#include "net_faults.h"
#include "pg_pair.h"
#include "streamlock/client.h"
#include "streamlock/error.h"
#include "watchdog.h"

using streamlock::Client;
using streamlock::Milliseconds;
using streamlock::Options;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

Options pgOptions(const std::string& conninfo, test::CapturedLog& log) {
  Options options;
  options.postgres.conninfo = conninfo;
  options.logger = log.logger();
  return options;
}

// One statement through the Client's pool: its first value, or the error's text.
struct Outcome {
  std::optional<std::string> value;
  std::string error;
  Milliseconds took{0};
};

Outcome run(streamlock::PgPool& pool, const std::string& sql) {
  Outcome outcome;
  const auto start = Clock::now();
  try {
    const auto result = pool.execute(sql);
    outcome.value = result.rows() > 0 ? std::string(result.value(0, 0)) : std::string();
  } catch (const streamlock::Error& error) {
    outcome.error = std::string(streamlock::toString(error.code())) + ": " + error.what();
  }
  outcome.took = test::elapsedSince(start);
  return outcome;
}

std::string sharedDatabaseName() {
  const std::string url = test::databaseUrl();  // postgresql://postgres@127.0.0.1:PORT/NAME
  return url.substr(url.rfind('/') + 1);
}

}  // namespace

TEST_CASE("a hung first PostgreSQL host: the first statement succeeds within about a second") {
  test::Watchdog watchdog("hung first host", 60s);
  test::SilentListener hung(test::SilentListener::Mode::Accept);
  const std::string realPort = test::requireEnv("STREAMLOCK_TEST_PG_PORT");
  const std::string conninfo = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(hung.port()) + "," + realPort +
                               " dbname=" + sharedDatabaseName() + " user=postgres target_session_attrs=read-write";
  test::CapturedLog log;
  Client client(pgOptions(conninfo, log));
  auto* pool = client.postgres();
  REQUIRE(pool != nullptr);

  const auto first = run(*pool, "SELECT current_setting('port')");
  std::printf("hung first host: the first statement took %lld ms (%s)\n", static_cast<long long>(first.took.count()),
              first.value ? "ok" : first.error.c_str());
  INFO(first.error);
  REQUIRE(first.value == std::optional<std::string>(realPort));
  CHECK(first.took < 1500ms);      // one per-host attempt (500 ms) and a connect, not the 2 s deadline
  CHECK(hung.accepted() == 1);     // the hung host was tried first, as listed

  // For a while afterwards new connections try the hung host last: four statements at once need
  // new pooled connections, and none of them goes to the hung host.
  std::vector<Outcome> outcomes(4);
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (auto& outcome : outcomes) {
    threads.emplace_back([&outcome, pool] { outcome = run(*pool, "SELECT pg_sleep(0.2)::text || current_setting('port')"); });
  }
  for (auto& thread : threads) thread.join();
  const auto took = test::elapsedSince(start);
  for (const auto& outcome : outcomes) {
    INFO(outcome.error);
    CHECK(outcome.value == std::optional<std::string>(realPort));
  }
  CHECK(hung.accepted() == 1);
  CHECK(took < 1500ms);
  CHECK(pool->stats().open >= 4);
}

TEST_CASE("read-write picks the primary when the standby is listed first") {
  test::Watchdog watchdog("standby listed first", 60s);
  const std::string primaryPort = test::requireEnv("STREAMLOCK_TEST_PG_PORT");
  const std::string standbyPort = test::requireEnv("STREAMLOCK_TEST_PG_STANDBY_PORT");
  test::CapturedLog log;
  {
    Client standby(pgOptions(test::requireEnv("STREAMLOCK_TEST_PG_STANDBY_URL"), log));
    const auto recovery = run(*standby.postgres(), "SELECT pg_is_in_recovery()::text");
    INFO(recovery.error);
    REQUIRE(recovery.value == std::optional<std::string>("true"));  // the shared standby is one
  }
  Client client(pgOptions("host=127.0.0.1,127.0.0.1 port=" + standbyPort + "," + primaryPort + " dbname=" +
                              sharedDatabaseName() + " user=postgres target_session_attrs=read-write",
                          log));
  const auto where = run(*client.postgres(), "SELECT current_setting('port') || ' ' || pg_is_in_recovery()::text");
  INFO(where.error);
  CHECK(where.value == std::optional<std::string>(primaryPort + " false"));
  const auto write = run(*client.postgres(), "SELECT txid_current()::text");  // needs a read-write session
  INFO(write.error);
  CHECK(write.value.has_value());
}

TEST_CASE("a promote without a server restart: the next statements run on the new primary") {
  test::Watchdog watchdog("promote", 180s);
  test::PgStandbyPair pair;
  {
    test::TestDb primary(pair.primaryConninfo());
    primary.exec("CREATE TABLE failover_probe (id serial PRIMARY KEY, note text NOT NULL)");
    test::TestDb standby(pair.standbyConninfo());
    REQUIRE(test::waitUntil(
        [&] { return standby.scalar("SELECT to_regclass('failover_probe')::text").has_value(); }, 10s, 20ms));
  }
  test::CapturedLog log;
  auto options = pgOptions(pair.failoverConninfo(), log);
  options.postgres.poolSize = 4;
  Client client(options);
  auto* pool = client.postgres();
  REQUIRE(pool != nullptr);
  const std::string insert =
      "INSERT INTO failover_probe (note) VALUES ('x') RETURNING current_setting('port')";
  {
    const auto before = run(*pool, insert);
    INFO(before.error);
    REQUIRE(before.value == std::optional<std::string>(std::to_string(pair.primaryPort())));
  }
  {
    test::TestDb standby(pair.standbyConninfo());  // the row reached the standby before the failover
    REQUIRE(test::waitUntil([&] { return standby.number("SELECT count(*) FROM failover_probe") == 1; }, 10s, 20ms));
  }

  SECTION("the primary stopped (fast shutdown)") { pair.stopPrimary(); }
  SECTION("the primary killed (SIGKILL)") { pair.killPrimary(); }

  // No primary: statements fail, and fast (the standby refuses read-write, the primary is gone).
  const auto during = run(*pool, insert);
  CHECK_FALSE(during.value.has_value());
  CHECK(during.took < 3s);

  const auto promoteStart = Clock::now();
  pair.promoteStandby();
  const auto promotedAt = Clock::now();
  std::printf("pg_ctl promote took %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<Milliseconds>(promotedAt - promoteStart).count()));

  // The next statement, on the same Client, runs on the new primary.
  const auto next = run(*pool, insert);
  std::printf("after the promote: the next statement %s in %lld ms\n", next.value ? "succeeded" : "failed",
              static_cast<long long>(next.took.count()));
  INFO(next.error);
  CHECK(next.value == std::optional<std::string>(std::to_string(pair.standbyPort())));
  // And every later one, within 3 s of the promote at worst.
  std::optional<Outcome> ok;
  test::waitUntil(
      [&] {
        auto outcome = run(*pool, insert);
        if (!outcome.value) return false;
        ok = outcome;
        return true;
      },
      3s, 20ms);
  REQUIRE(ok.has_value());
  CHECK(ok->value == std::optional<std::string>(std::to_string(pair.standbyPort())));
  CHECK(std::chrono::duration_cast<Milliseconds>(Clock::now() - promotedAt) < 3s);
  const auto rows = run(*pool, "SELECT count(*)::text FROM failover_probe");
  INFO(rows.error);
  CHECK(std::stoll(rows.value.value_or("0")) >= 2);  // the row from before the failover is there
}
