// The round-trip budget of the read routes, counted rather than timed. Per request:
// - PostgreSQL statements: pg_stat_statements rows of the server's own database and role, read
//   from another database (the admin one) so that the measurement never counts itself;
// - Redis round trips: the server's streamlock_lookup_round_trips_total (/metrics), cross-checked
//   against a private redis-server's INFO commandstats (MGETs of up to 1,000 keys, one pipeline);
// - repair statements: calls of the UPDATE ... unnest(...) statement.
// Budget: one statement for authentication, access and the rows together; at most one Redis round
// trip whatever the number of chats; one repair statement when something is stale, else none.

#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;

namespace {

const std::string kChats = "/api/mothership/chats";

struct StatementCalls {
  long long calls = 0;
  std::string query;
};
using StatementSnapshot = std::map<std::string, StatementCalls>;  // queryid:toplevel -> calls

bool isRepairStatement(const std::string& query) {
  std::string lower;
  for (const char c : query.substr(0, 16)) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return lower.find("update") != std::string::npos && query.find("unnest(") != std::string::npos;
}

// pg_stat_statements of one database and the current role, queried from the admin database
// (STREAMLOCK_TEST_DATABASE_URL, which has the extension): these queries run in another database
// than the one counted, so they never count themselves.
class StatementCounter {
 public:
  explicit StatementCounter(const std::string& database)
      : admin_(requireEnv("STREAMLOCK_TEST_DATABASE_URL")), database_(database) {
    const auto adminDatabase = admin_.value("SELECT current_database()");
    if (adminDatabase == std::optional<std::string>(database_)) {
      throw std::runtime_error("the counted database must not be the admin database");
    }
    if (!admin_.value("SELECT to_regclass('pg_stat_statements')::text")) {
      throw std::runtime_error("pg_stat_statements is not installed in STREAMLOCK_TEST_DATABASE_URL's database "
                               "(tests/run.sh creates it, with shared_preload_libraries = pg_stat_statements)");
    }
  }

  StatementSnapshot snapshot() {
    StatementSnapshot out;
    const auto rows = admin_.rows(
        "SELECT s.queryid::text || ':' || s.toplevel::text, s.calls::text, s.query FROM pg_stat_statements s "
        "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = $1) "
        "AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = current_user)",
        {database_});
    for (const auto& row : rows) out[*row[0]] = {std::stoll(*row[1]), row[2].value_or("")};
    return out;
  }

 private:
  Sql admin_;
  std::string database_;
};

std::map<std::string, long long> commandStats(Redis& redis) {
  std::map<std::string, long long> out;
  std::istringstream lines(redis.info("commandstats"));
  std::string line;
  constexpr std::string_view kPrefix = "cmdstat_";
  while (std::getline(lines, line)) {
    if (line.rfind(kPrefix, 0) != 0) continue;
    const auto colon = line.find(':');
    const auto calls = line.find("calls=", colon);
    if (colon == std::string::npos || calls == std::string::npos) continue;
    out[line.substr(kPrefix.size(), colon - kPrefix.size())] = std::stoll(line.substr(calls + 6));
  }
  return out;
}

// The value of an unlabelled counter in the Prometheus text of /metrics.
long long metric(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stoll(line.substr(name.size() + 1));
  }
  throw std::runtime_error("/metrics has no " + name);
}

// What one request cost.
struct Cost {
  long long statements = 0;  // PostgreSQL statements other than the repair
  long long repairs = 0;     // calls of the repair statement
  long long roundTrips = 0;  // lookup round trips (the server's counter)
  long long mgets = 0;       // MGETs Redis received
  long long repaired = 0;    // markers the server reports repaired
  long long repairFailures = 0;
  std::string redisOther;  // any other command Redis received ("name+calls ...")
  std::string detail;      // the statements run, for failure messages
};

std::string describe(const Cost& cost) {
  return "statements=" + std::to_string(cost.statements) + " repairs=" + std::to_string(cost.repairs) +
         " lookupRoundTrips=" + std::to_string(cost.roundTrips) + " MGET=" + std::to_string(cost.mgets) +
         " repaired=" + std::to_string(cost.repaired) + " repairFailures=" + std::to_string(cost.repairFailures) +
         (cost.redisOther.empty() ? "" : " other Redis commands: " + cost.redisOther) + "\n" + cost.detail;
}

// A server on a private redis-server, with the instruments to count what a request costs.
class Bench {
 public:
  Bench()
      : server_({"--redis-url", privateRedis_.url(), "--redis-timeout-ms", "5000"}),
        redis_(privateRedis_.url()),
        statements_(TestDatabase::get().name()) {}

  Seed& seed() { return seed_; }
  Sql& sql() { return sql_; }
  Redis& redis() { return redis_; }

  // Runs the request and returns its response and what it cost. Nothing else may touch the test
  // database or the private Redis meanwhile.
  std::pair<Response, Cost> measure(const std::string& path, const std::string& token) {
    const auto metricsBefore = scrape();
    const auto pgBefore = statements_.snapshot();
    const auto redisBefore = commandStats(redis_);
    auto response = server_.get(path, token);
    const auto pgAfter = statements_.snapshot();
    const auto redisAfter = commandStats(redis_);
    const auto metricsAfter = scrape();

    Cost cost;
    for (const auto& [key, after] : pgAfter) {
      const auto before = pgBefore.find(key);
      const long long calls = after.calls - (before == pgBefore.end() ? 0 : before->second.calls);
      if (calls == 0) continue;
      (isRepairStatement(after.query) ? cost.repairs : cost.statements) += calls;
      cost.detail += "  " + std::to_string(calls) + "x " + after.query.substr(0, 160) + "\n";
    }
    for (const auto& [command, after] : redisAfter) {
      const auto before = redisBefore.find(command);
      const long long calls = after - (before == redisBefore.end() ? 0 : before->second);
      if (calls == 0 || command == "info") continue;  // INFO: this measurement's own
      if (command == "mget") {
        cost.mgets = calls;
      } else {
        cost.redisOther += command + "+" + std::to_string(calls) + " ";
      }
    }
    const auto delta = [&](const char* name) { return metric(metricsAfter, name) - metric(metricsBefore, name); };
    cost.roundTrips = delta("streamlock_lookup_round_trips_total");
    cost.repaired = delta("streamlock_markers_repaired_total");
    cost.repairFailures = delta("streamlock_repair_failures_total");
    return {std::move(response), std::move(cost)};
  }

  // First-request effects (the repair's one-time column-type lookup, statement preparation, the
  // first pooled connections) happen here, on chats of another caller: one list and one chat
  // request, each with a stale marker. Returns what they cost, for the record.
  std::pair<Cost, Cost> warmUp() {
    const auto caller = newCaller(seed_);
    const auto listed = seed_.chat(caller.userId, caller.workspaceId);
    const auto single = seed_.chat(caller.userId, caller.workspaceId);
    seed_.setMarker(listed, "stream-warm-up-1");
    auto [list, listCost] = measure(chatListPath(caller.workspaceId), caller.token);
    REQUIRE(list.status == 200);
    seed_.setMarker(single, "stream-warm-up-2");
    auto [chat, chatCost] = measure(kChats + "/" + single, caller.token);
    REQUIRE(chat.status == 200);
    return {listCost, chatCost};
  }

 private:
  std::string scrape() {
    const auto response = server_.get("/metrics");
    if (response.status != 200) throw std::runtime_error("GET /metrics failed");
    return response.body;
  }

  PrivateRedis privateRedis_;
  Server server_;
  Sql& sql_ = TestDatabase::get().sql();
  Seed seed_{sql_};
  Redis redis_;
  StatementCounter statements_;
};

void record(const std::string& what, const Cost& cost) {
  const auto text = describe(cost);
  std::printf("budget: %-36s %s\n", what.c_str(), text.substr(0, text.find('\n')).c_str());
  std::fflush(stdout);
}

long long mgetsFor(std::size_t keys) { return static_cast<long long>((keys + 999) / 1000); }

// n mothership chats of the caller in their workspace, each with a marker, in ONE statement;
// returns {id, marker} in insertion order.
std::vector<std::pair<std::string, std::string>> seedChats(Sql& sql, const Caller& caller, std::size_t n) {
  const auto rows = sql.rows(
      "INSERT INTO copilot_chats (user_id, workspace_id, type, title, conversation_id, updated_at) "
      "SELECT $1, $2, 'mothership', 'chat ' || i, 'stream-' || $2 || '-' || i, now() - i * interval '1 second' "
      "FROM generate_series(1, $3::int) AS i RETURNING id::text, conversation_id",
      {caller.userId, caller.workspaceId, std::to_string(n)});
  std::vector<std::pair<std::string, std::string>> chats;
  chats.reserve(rows.size());
  for (const auto& row : rows) chats.emplace_back(*row[0], *row[1]);
  return chats;
}

// chat id -> activeStreamId (empty for null) of a list response.
std::unordered_map<std::string, std::string> activeStreamIds(const Response& response) {
  std::unordered_map<std::string, std::string> out;
  const auto json = response.json();
  for (const auto& chat : json.at("data")) {
    out[chat["id"].get<std::string>()] =
        chat["activeStreamId"].is_null() ? std::string() : chat["activeStreamId"].get<std::string>();
  }
  return out;
}

// Checks a cost against the budget: exactly one statement, the given repair statements, lookup
// round trips and MGETs, and no other Redis command; then that the repair, if any, succeeded.
void checkBudget(const Cost& cost, long long repairs, long long roundTrips, long long mgets) {
  INFO(describe(cost));
  CHECK(cost.statements == 1);
  // Repair statements sent: pg_stat_statements counts only those that completed, the server
  // counts those that failed (a timeout, say).
  CHECK(cost.repairs + cost.repairFailures == repairs);
  CHECK(cost.roundTrips == roundTrips);
  CHECK(cost.mgets == mgets);
  CHECK(cost.redisOther.empty());
  CHECK(cost.repairFailures == 0);
}

}  // namespace

TEST_CASE("a chat list costs one statement, at most one Redis round trip and one repair, at any size",
          "[server][budget]") {
  Bench bench;
  const auto [warmList, warmChat] = bench.warmUp();
  record("first list request (warm-up, 1 stale)", warmList);
  record("first chat request (warm-up, stale)", warmChat);

  for (const std::size_t n : {std::size_t{1}, std::size_t{50}, std::size_t{1000}, std::size_t{10000}}) {
    const auto size = std::to_string(n);
    INFO(size << " chats");
    const auto caller = newCaller(bench.seed());
    const auto chats = seedChats(bench.sql(), caller, n);
    REQUIRE(chats.size() == n);
    const auto path = chatListPath(caller.workspaceId);

    // 1. Every chat has a marker and a live lock: all looked up, nothing stale.
    std::vector<std::pair<std::string, std::string>> locks(chats.begin(), chats.end());
    bench.redis().setLocks(locks);
    {
      const auto [response, cost] = bench.measure(path, caller.token);
      record(size + " chats, all live", cost);
      REQUIRE(response.status == 200);
      const auto active = activeStreamIds(response);
      REQUIRE(active.size() == n);
      std::size_t wrong = 0;
      for (const auto& [id, marker] : chats) wrong += active.at(id) == marker ? 0U : 1U;
      CHECK(wrong == 0);
      checkBudget(cost, 0, 1, mgetsFor(n));
    }

    // 2. Half the locks gone (every other chat; the only one when n is 1): a mix of live locks and
    //    stale markers. All looked up in one round trip, the stale ones repaired in one statement.
    std::vector<std::string> stale;
    std::size_t live = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (i % 2 == 0) {
        stale.push_back(chats[i].first);
      } else {
        ++live;
      }
    }
    bench.redis().deleteLocks(stale);
    {
      const auto [response, cost] = bench.measure(path, caller.token);
      record(size + " chats, " + std::to_string(stale.size()) + " stale", cost);
      REQUIRE(response.status == 200);
      const auto active = activeStreamIds(response);
      REQUIRE(active.size() == n);
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < n; ++i) {
        wrong += active.at(chats[i].first) == (i % 2 == 0 ? std::string() : chats[i].second) ? 0U : 1U;
      }
      CHECK(wrong == 0);
      checkBudget(cost, 1, 1, mgetsFor(n));
      CHECK(cost.repaired == static_cast<long long>(stale.size()));
      const auto markers = bench.sql().value(
          "SELECT count(conversation_id)::text FROM copilot_chats WHERE workspace_id = $1", {caller.workspaceId});
      CHECK(markers == std::optional<std::string>(std::to_string(live)));
    }

    // 3. Again: the repaired chats have no marker and are not looked up; nothing is stale (unless
    //    the repair above failed: then its markers are looked up and repaired again).
    {
      const auto marked = static_cast<std::size_t>(std::stoul(*bench.sql().value(
          "SELECT count(conversation_id)::text FROM copilot_chats WHERE workspace_id = $1", {caller.workspaceId})));
      const auto [response, cost] = bench.measure(path, caller.token);
      record(size + " chats, " + std::to_string(marked) + " marked, " + std::to_string(marked - live) + " stale", cost);
      REQUIRE(response.status == 200);
      checkBudget(cost, marked > live ? 1 : 0, marked > 0 ? 1 : 0, mgetsFor(marked));
    }

    // Archived scope: not reconciled, so no lookup at all.
    {
      const auto [response, cost] = bench.measure(chatListPath(caller.workspaceId, "archived"), caller.token);
      REQUIRE(response.status == 200);
      checkBudget(cost, 0, 0, 0);
    }
  }
}

TEST_CASE("a single chat costs one statement, at most one Redis round trip and one repair", "[server][budget]") {
  Bench bench;
  bench.warmUp();
  const auto caller = newCaller(bench.seed());
  // The chat sits among 1,000 marked chats of its workspace: only it is looked up.
  const auto others = seedChats(bench.sql(), caller, 1000);
  const auto chatId = bench.seed().chat(caller.userId, caller.workspaceId);
  const auto path = kChats + "/" + chatId;
  const auto activeStreamId = [](const Response& response) { return response.json()["chat"]["activeStreamId"]; };

  bench.seed().setMarker(chatId, "stream-single-live");
  bench.redis().setLock(chatId, "stream-single-live");
  {
    const auto [response, cost] = bench.measure(path, caller.token);
    record("chat, live lock", cost);
    REQUIRE(response.status == 200);
    CHECK(activeStreamId(response) == "stream-single-live");
    checkBudget(cost, 0, 1, 1);
  }

  // The owner wins over a stale marker value: no repair.
  bench.redis().setLock(chatId, "stream-single-owner");
  {
    const auto [response, cost] = bench.measure(path, caller.token);
    record("chat, lock of another stream", cost);
    REQUIRE(response.status == 200);
    CHECK(activeStreamId(response) == "stream-single-owner");
    checkBudget(cost, 0, 1, 1);
  }

  bench.redis().deleteLock(chatId);
  {
    const auto [response, cost] = bench.measure(path, caller.token);
    record("chat, stale marker", cost);
    REQUIRE(response.status == 200);
    CHECK(activeStreamId(response).is_null());
    checkBudget(cost, 1, 1, 1);
    CHECK(cost.repaired == 1);
    CHECK(bench.seed().marker(chatId) == std::nullopt);
  }

  {
    const auto [response, cost] = bench.measure(path, caller.token);
    record("chat, no marker", cost);
    REQUIRE(response.status == 200);
    CHECK(activeStreamId(response).is_null());
    checkBudget(cost, 0, 0, 0);
  }

  {
    const auto [response, cost] = bench.measure(kChats + "/00000000-0000-4000-8000-000000000000", caller.token);
    record("chat, not found", cost);
    CHECK(response.status == 404);
    checkBudget(cost, 0, 0, 0);
  }
  CHECK(others.size() == 1000);
}
