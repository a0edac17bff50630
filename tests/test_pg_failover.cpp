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

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
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

// libpq's target_session_attrs=prefer-standby picks a standby anywhere in the host list and falls
// back to any host only when none is a standby. Splitting the list into one connect per host must
// keep that meaning: the primary listed first must not win over the standby listed second.
TEST_CASE("prefer-standby picks the standby even when the primary is listed first, as libpq does") {
  test::Watchdog watchdog("prefer-standby", 60s);
  const std::string primaryPort = test::requireEnv("STREAMLOCK_TEST_PG_PORT");
  const std::string standbyPort = test::requireEnv("STREAMLOCK_TEST_PG_STANDBY_PORT");
  const std::string conninfo = "host=127.0.0.1,127.0.0.1 port=" + primaryPort + "," + standbyPort +
                               " dbname=" + sharedDatabaseName() + " user=postgres target_session_attrs=prefer-standby";
  const std::string where = "SELECT current_setting('port') || ' ' || pg_is_in_recovery()::text";
  {
    test::TestDb libpq(conninfo);  // libpq itself, for reference
    REQUIRE(libpq.scalar(where) == std::optional<std::string>(standbyPort + " true"));
  }
  test::CapturedLog log;
  Client client(pgOptions(conninfo, log));
  const auto outcome = run(*client.postgres(), where);
  INFO(outcome.error);
  CHECK(outcome.value == std::optional<std::string>(standbyPort + " true"));
}

namespace {

// The parent pid of a process, from /proc/<pid>/stat; 0 when it is gone.
pid_t parentOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);  // one line
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  char state = 0;
  int ppid = 0;
  if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return 0;
  return static_cast<pid_t>(ppid);
}

// A postmaster and every process it forked (backends, checkpointer, walsender...).
std::vector<pid_t> serverProcesses(pid_t postmaster) {
  std::vector<pid_t> out{postmaster};
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (parentOf(pid) == postmaster) out.push_back(pid);
  }
  return out;
}

// A hung server: the postmaster and its children stopped (SIGSTOP). The kernel still completes TCP
// handshakes and takes bytes into the socket buffers; nothing is answered. Undone on destruction
// (SIGKILL to the children, SIGCONT to the postmaster, so that PgStandbyPair can stop it).
class FrozenServer {
 public:
  explicit FrozenServer(pid_t postmaster) : postmaster_(postmaster) {
    processes_ = serverProcesses(postmaster);
    for (pid_t pid : processes_) ::kill(pid, SIGSTOP);
  }
  ~FrozenServer() {
    for (pid_t pid : processes_) {
      if (pid != postmaster_) ::kill(pid, SIGKILL);
    }
    ::kill(postmaster_, SIGCONT);
  }
  FrozenServer(const FrozenServer&) = delete;
  FrozenServer& operator=(const FrozenServer&) = delete;

 private:
  pid_t postmaster_;
  std::vector<pid_t> processes_;
};

}  // namespace

// A failover whose old primary hangs instead of dying (a frozen VM, a network partition that keeps
// the TCP sessions): the pooled connections to it are idle and look healthy. The first statement
// on one of them can only find out by its timeout; the next ones must not each pay a timeout on
// another pooled connection to the same hung host, but run on the new primary.
TEST_CASE("a promote while the old primary hangs: after one statement timed out, the next runs on the new primary") {
  test::Watchdog watchdog("promote, hung old primary", 180s);
  test::PgStandbyPair pair;
  test::CapturedLog log;
  auto options = pgOptions(pair.failoverConninfo(), log);
  options.postgres.poolSize = 4;
  options.postgres.statementTimeout = 1000ms;
  Client client(options);
  auto* pool = client.postgres();
  REQUIRE(pool != nullptr);
  const std::string where = "SELECT current_setting('port')";

  // Four pooled connections to the primary, idle.
  {
    std::vector<Outcome> outcomes(4);
    std::vector<std::thread> threads;
    for (auto& outcome : outcomes) {
      threads.emplace_back([&outcome, pool] { outcome = run(*pool, "SELECT pg_sleep(0.3)::text || current_setting('port')"); });
    }
    for (auto& thread : threads) thread.join();
    for (const auto& outcome : outcomes) {
      INFO(outcome.error);
      REQUIRE(outcome.value == std::optional<std::string>(std::to_string(pair.primaryPort())));
    }
    REQUIRE(test::waitUntil([&] { return pool->stats().idle == 4; }, 5s));
  }
  pid_t postmaster = 0;
  {
    test::TestDb primary(pair.primaryConninfo());
    postmaster = parentOf(primary.backendPid());
  }
  REQUIRE(postmaster > 0);

  std::optional<FrozenServer> frozen;
  frozen.emplace(postmaster);
  pair.promoteStandby();
  const auto promotedAt = Clock::now();

  // Statements one after the other, as requests come: count the failures before the first success.
  std::vector<Outcome> failures;
  std::optional<Outcome> ok;
  while (!ok && failures.size() < 8) {
    auto outcome = run(*pool, where);
    if (outcome.value) {
      ok = outcome;
    } else {
      failures.push_back(outcome);
    }
  }
  const auto recovered = test::elapsedSince(promotedAt);
  std::printf("hung old primary: %zu statements failed before one succeeded, %lld ms after the promote\n",
              failures.size(), static_cast<long long>(recovered.count()));
  for (const auto& failure : failures) std::printf("  failed after %lld ms: %s\n", static_cast<long long>(failure.took.count()), failure.error.c_str());
  REQUIRE(ok.has_value());
  CHECK(ok->value == std::optional<std::string>(std::to_string(pair.standbyPort())));
  CHECK(failures.size() <= 1);  // the one statement that found the old primary hung
  CHECK(recovered < 3s);
  frozen.reset();
}

TEST_CASE("a PostgreSQL host given by name (localhost) connects, its addresses tried in turn") {
  test::Watchdog watchdog("host name", 60s);
  test::CapturedLog log;
  Client client(pgOptions("host=localhost,localhost port=" + std::to_string(test::closedPort()) + "," +
                              test::requireEnv("STREAMLOCK_TEST_PG_PORT") + " dbname=" + sharedDatabaseName() +
                              " user=postgres target_session_attrs=read-write",
                          log));
  const auto outcome = run(*client.postgres(), "SELECT current_setting('port')");
  INFO(outcome.error);
  CHECK(outcome.value == std::optional<std::string>(test::requireEnv("STREAMLOCK_TEST_PG_PORT")));
}

// "A host that timed out is tried last for a while afterwards" holds for the Client, not for each
// of its pools: once a statement found the first host hung, the repair (which has its own pool)
// must not try that host first again and spend a per-host attempt of its bound on it.
TEST_CASE("a hung first host found by a statement is tried last by the repair too") {
  test::Watchdog watchdog("hung first host, repair", 60s);
  test::SilentListener hung(test::SilentListener::Mode::Accept);
  test::TestDb db;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  options.postgres.conninfo = "host=127.0.0.1,127.0.0.1 port=" + std::to_string(hung.port()) + "," +
                              test::requireEnv("STREAMLOCK_TEST_PG_PORT") + " dbname=" + sharedDatabaseName() +
                              " user=postgres target_session_attrs=read-write";
  Client client(options);
  const auto first = run(*client.postgres(), "SELECT 1::text");
  INFO(first.error);
  REQUIRE(first.value == std::optional<std::string>("1"));
  REQUIRE(hung.accepted() == 1);  // the statement found it hung, once

  const auto stale = chats.insert(std::string("stream-gone"));  // no lock in Redis: stale
  const auto start = Clock::now();
  const auto result = client.reconcileChatStreamMarkers(chats.candidates({stale}), streamlock::ReconcileOptions{true});
  const auto took = test::elapsedSince(start);
  std::printf("repair after the hung host was found: %lld ms, the hung host accepted %zu connections\n",
              static_cast<long long>(took.count()), hung.accepted());
  CHECK(result.repair.cleared == 1);
  CHECK(hung.accepted() == 1);  // the repair went to the other host at once
  CHECK(took < 400ms);
}
