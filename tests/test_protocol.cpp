// The pure protocol layer (streamlock/protocol.h): the functions a host with its own Redis and
// PostgreSQL clients follows the protocol with. The [unit] cases need no server; the others run
// what the functions produce against the real Redis and PostgreSQL that tests/run.sh starts, so
// that "the statement is right" means "PostgreSQL does the right thing with it", not "the text is
// what we wrote".
#define CATCH_CONFIG_ENABLE_ALL_STRINGMAKERS
#include <catch2/catch.hpp>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "env.h"
#include "pg.h"
#include "redis_client.h"
#include "streamlock/pending_streams.h"
#include "streamlock/protocol.h"

using streamlock::ActiveStreams;
using streamlock::LockOptions;
using streamlock::LookupStatus;
using streamlock::MarkerCandidate;
using streamlock::MarkerState;
using streamlock::PendingStreams;
using streamlock::ReconciledMarker;
using streamlock::RepairOptions;
using streamlock::StaleMarker;
using Command = streamlock::protocol::Command;
using Owners = std::unordered_map<std::string, std::string>;
using Value = std::optional<std::string>;
using namespace std::chrono_literals;
namespace protocol = streamlock::protocol;
namespace test = streamlock::test;

namespace {

std::vector<std::string> sequence(const std::string& stem, int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(stem + std::to_string(i));
  return out;
}

ReconciledMarker reconciled(std::string chat, MarkerState state, Value streamId, Value stale) {
  ReconciledMarker marker;
  marker.chatId = std::move(chat);
  marker.state = state;
  marker.streamId = std::move(streamId);
  marker.staleMarker = std::move(stale);
  return marker;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

// (chat, marker) pairs, comparable and printable.
Pairs pairs(const std::vector<StaleMarker>& markers) {
  Pairs out;
  for (const auto& marker : markers) out.emplace_back(marker.chatId, marker.marker);
  return out;
}

}  // namespace

// --- The lock --------------------------------------------------------------------------------------

TEST_CASE("lockKey is the prefix followed by the chat id", "[unit]") {
  CHECK(protocol::lockKey("copilot:chat-stream-lock:", "chat-1") == "copilot:chat-stream-lock:chat-1");
  CHECK(protocol::lockKey(LockOptions{}.keyPrefix, "c") == "copilot:chat-stream-lock:c");  // the shared default
  CHECK(protocol::lockKey("", "chat-1") == "chat-1");
  CHECK(protocol::lockKey("p:", "") == "p:");
  const std::string binary("a\0b", 3);
  CHECK(protocol::lockKey("p:", binary) == std::string("p:a\0b", 5));
}

TEST_CASE("acquireCommand is SET key streamId NX EX ttl", "[unit]") {
  CHECK(protocol::acquireCommand("p:chat-1", "stream-1", 60s) == Command{"SET", "p:chat-1", "stream-1", "NX", "EX", "60"});
  CHECK(protocol::acquireCommand("k", "s", 3s) == Command{"SET", "k", "s", "NX", "EX", "3"});
}

TEST_CASE("extendCommand is EVAL of the compare-and-expire script over the key, the stream id and the ttl",
          "[unit]") {
  CHECK(protocol::extendCommand("p:chat-1", "stream-1", 60s) ==
        Command{"EVAL", protocol::kExtendScript, "1", "p:chat-1", "stream-1", "60"});
}

TEST_CASE("releaseCommand is EVAL of the compare-and-delete script over the key and the stream id", "[unit]") {
  CHECK(protocol::releaseCommand("p:chat-1", "stream-1") ==
        Command{"EVAL", protocol::kReleaseScript, "1", "p:chat-1", "stream-1"});
}

TEST_CASE("arguments are passed whole, never formatted: spaces, quotes and CRLF stay inside one argument", "[unit]") {
  const std::string stream = "stream \"1\"\r\n%s";
  const auto command = protocol::acquireCommand("p:chat 1", stream, 10s);
  REQUIRE(command.size() == 6);
  CHECK(command[1] == "p:chat 1");
  CHECK(command[2] == stream);
}

TEST_CASE("writerTiming: the defaults (ttl 60 s, commandTimeout 1 s)", "[unit]") {
  const auto timing = protocol::writerTiming(LockOptions{}, 1000ms);
  CHECK(timing.heartbeatInterval == 20s);  // ttl / 3
  CHECK(timing.retryDelay == 1s);          // min(1 s, 20 s / 4)
  CHECK(timing.ownershipWindow == 59s);    // 60 s - max(1 s, 500 ms)
}

TEST_CASE("writerTiming: ttl 3 s with the default interval and commandTimeout", "[unit]") {
  LockOptions lock;
  lock.ttl = 3s;
  const auto timing = protocol::writerTiming(lock, 1000ms);
  CHECK(timing.heartbeatInterval == 1s);
  CHECK(timing.retryDelay == 250ms);    // a quarter of the interval, below 1 s
  CHECK(timing.ownershipWindow == 2s);  // 3 s - 1 s
}

TEST_CASE("writerTiming: an explicit interval of 4 s retries after 1 s", "[unit]") {
  LockOptions lock;
  lock.ttl = 15s;
  lock.heartbeatInterval = 4s;
  const auto timing = protocol::writerTiming(lock, 1000ms);
  CHECK(timing.heartbeatInterval == 4s);
  CHECK(timing.retryDelay == 1s);
  CHECK(timing.ownershipWindow == 14s);
}

TEST_CASE("writerTiming: the ownership window keeps at least 500 ms of margin under a short commandTimeout",
          "[unit]") {
  LockOptions lock;
  lock.ttl = 3s;
  CHECK(protocol::writerTiming(lock, 200ms).ownershipWindow == 2500ms);
  CHECK(protocol::writerTiming(lock, 500ms).ownershipWindow == 2500ms);
  CHECK(protocol::writerTiming(lock, 2000ms).ownershipWindow == 1s);
}

// --- The lookup -------------------------------------------------------------------------------------

TEST_CASE("chatsToLookUp: only candidates with a persisted marker, in candidate order", "[unit]") {
  const std::vector<MarkerCandidate> candidates{
      {"chat-a", std::string("stream-a")}, {"chat-null", std::nullopt}, {"chat-empty", std::string("")},
      {"chat-b", std::string("stream-b")}, {"chat-c", std::string(" ")}};
  CHECK(protocol::chatsToLookUp(candidates) == std::vector<std::string>{"chat-a", "chat-b", "chat-c"});
  CHECK(protocol::chatsToLookUp({}).empty());
  CHECK(protocol::chatsToLookUp({{"chat-null", std::nullopt}, {"chat-empty", std::string()}}).empty());
}

TEST_CASE("planLookup: the lock keys in order, one MGET for a small batch", "[unit]") {
  const auto plan = protocol::planLookup({"a", "b", "c"}, "p:");
  CHECK(plan.chatIds == std::vector<std::string>{"a", "b", "c"});
  CHECK(plan.keys == std::vector<std::string>{"p:a", "p:b", "p:c"});
  CHECK(plan.commands == std::vector<Command>{{"MGET", "p:a", "p:b", "p:c"}});
}

TEST_CASE("planLookup: 2,500 chats in chunks of 1,000 are three MGETs of 1,000, 1,000 and 500 keys, in order",
          "[unit]") {
  const auto chats = sequence("chat-", 2500);
  const auto plan = protocol::planLookup(chats, "p:", 1000);
  REQUIRE(plan.keys.size() == 2500);
  REQUIRE(plan.commands.size() == 3);
  CHECK(plan.commands[0].size() == 1001);
  CHECK(plan.commands[1].size() == 1001);
  CHECK(plan.commands[2].size() == 501);
  // Concatenated, the MGETs' keys are the plan's keys in order.
  std::vector<std::string> covered;
  for (const auto& command : plan.commands) {
    CHECK(command.front() == "MGET");
    covered.insert(covered.end(), command.begin() + 1, command.end());
  }
  CHECK(covered == plan.keys);
  CHECK(plan.keys.front() == "p:chat-0");
  CHECK(plan.keys.back() == "p:chat-2499");
  CHECK(plan.commands[1][1] == "p:chat-1000");
  CHECK(plan.commands[2][1] == "p:chat-2000");
}

TEST_CASE("planLookup: the default chunk is 1,000 and a batch of exactly one chunk is one MGET", "[unit]") {
  CHECK(protocol::planLookup(sequence("c", 1000), "p:").commands.size() == 1);
  CHECK(protocol::planLookup(sequence("c", 1001), "p:").commands.size() == 2);
}

TEST_CASE("planLookup: chunk 0 is taken as 1", "[unit]") {
  const auto plan = protocol::planLookup({"a", "b", "c"}, "p:", 0);
  CHECK(plan.commands == std::vector<Command>{{"MGET", "p:a"}, {"MGET", "p:b"}, {"MGET", "p:c"}});
}

TEST_CASE("planLookup: no chats, no command", "[unit]") {
  const auto plan = protocol::planLookup({}, "p:");
  CHECK(plan.keys.empty());
  CHECK(plan.commands.empty());
}

TEST_CASE("verifiedOwners: a value is its chat's owner, and nullopt and the empty string are no owner", "[unit]") {
  const auto plan = protocol::planLookup({"a", "b", "c", "d"}, "p:");
  const auto active = protocol::verifiedOwners(plan, {std::string("stream-a"), std::nullopt, std::string(""),
                                                      std::string("stream-d")});
  CHECK(active.status == LookupStatus::Verified);
  CHECK(active.owners == Owners{{"a", "stream-a"}, {"d", "stream-d"}});
}

TEST_CASE("verifiedOwners: no chats is verified with no owners", "[unit]") {
  const auto active = protocol::verifiedOwners(protocol::planLookup({}, "p:"), {});
  CHECK(active.status == LookupStatus::Verified);
  CHECK(active.owners.empty());
}

TEST_CASE("verifiedOwners: a wrong number of values throws std::invalid_argument (never a partial answer)",
          "[unit]") {
  const auto plan = protocol::planLookup({"a", "b"}, "p:");
  CHECK_THROWS_AS(protocol::verifiedOwners(plan, {std::string("stream-a")}), std::invalid_argument);
  CHECK_THROWS_AS(protocol::verifiedOwners(plan, {std::nullopt, std::nullopt, std::nullopt}), std::invalid_argument);
  CHECK_THROWS_AS(protocol::verifiedOwners(plan, {}), std::invalid_argument);
}

TEST_CASE("unknownOwners: the local owners of the planned chats only, status unknown", "[unit]") {
  PendingStreams pending;
  pending.record("a", "stream-a");
  pending.record("not-planned", "stream-z");
  const auto active = protocol::unknownOwners(protocol::planLookup({"a", "b"}, "p:"), pending);
  CHECK(active.status == LookupStatus::Unknown);
  CHECK(active.owners == Owners{{"a", "stream-a"}});
  CHECK(protocol::unknownOwners(protocol::planLookup({"b"}, "p:"), PendingStreams{}).owners.empty());
}

// --- Reconciliation and repair ------------------------------------------------------------------------

TEST_CASE("staleMarkers: the markers with a verified-stale value, in order", "[unit]") {
  const std::vector<ReconciledMarker> markers{
      reconciled("active", MarkerState::Active, std::string("s1"), std::nullopt),
      reconciled("stale-1", MarkerState::Inactive, std::nullopt, std::string("old-1")),
      reconciled("inactive", MarkerState::Inactive, std::nullopt, std::nullopt),
      reconciled("unknown", MarkerState::Unknown, std::string("s2"), std::nullopt),
      reconciled("stale-2", MarkerState::Inactive, std::nullopt, std::string("old-2")),
  };
  CHECK(pairs(protocol::staleMarkers(markers)) == Pairs{{"stale-1", "old-1"}, {"stale-2", "old-2"}});
  CHECK(protocol::staleMarkers({}).empty());
}

TEST_CASE("staleMarkers after reconcileMarkers: exactly the verified markers whose lock is gone", "[unit]") {
  ActiveStreams verified;
  verified.status = LookupStatus::Verified;
  verified.owners = {{"live", "stream-live"}};
  const auto markers = streamlock::reconcileMarkers(
      {{"live", std::string("stream-old")}, {"gone", std::string("stream-gone")}, {"null", std::nullopt}}, verified);
  CHECK(pairs(protocol::staleMarkers(markers)) == Pairs{{"gone", "stream-gone"}});

  ActiveStreams unknown;
  unknown.status = LookupStatus::Unknown;
  CHECK(protocol::staleMarkers(streamlock::reconcileMarkers({{"gone", std::string("stream-gone")}}, unknown)).empty());
}

TEST_CASE("quoteIdentifier: double quotes around, embedded quotes doubled", "[unit]") {
  CHECK(protocol::quoteIdentifier("copilot_chats") == "\"copilot_chats\"");
  CHECK(protocol::quoteIdentifier("Mixed Case") == "\"Mixed Case\"");
  CHECK(protocol::quoteIdentifier("a\"b") == "\"a\"\"b\"");
  CHECK(protocol::quoteIdentifier("\"") == "\"\"\"\"");
  CHECK(protocol::quoteIdentifier("x; DROP TABLE y") == "\"x; DROP TABLE y\"");
  CHECK(protocol::quoteIdentifier("") == "\"\"");
}

TEST_CASE("columnTypesQuery: the table as a quoted name for to_regclass, the columns as plain values", "[unit]") {
  RepairOptions repair;
  repair.table = "my\"table";
  repair.idColumn = "i\"d";
  repair.markerColumn = "conversation_id";
  const auto query = protocol::columnTypesQuery(repair);
  CHECK(query.sql.find("$1") != std::string::npos);
  CHECK(query.sql.find("my") == std::string::npos);  // nothing spliced into the text
  CHECK(query.params == protocol::SqlParams{std::string("\"my\"\"table\""), std::string("i\"d"),
                                            std::string("conversation_id")});
}

TEST_CASE("repairSql: quoted identifiers, the column types as given, the two arrays as $1 and $2", "[unit]") {
  RepairOptions repair;
  repair.table = "t\"x";
  repair.idColumn = "id";
  repair.markerColumn = "mark\"er";
  const auto sql = protocol::repairSql(repair, "uuid", "text");
  CHECK(sql ==
        "UPDATE \"t\"\"x\" AS chat SET \"mark\"\"er\" = NULL FROM unnest($1::text[], $2::text[]) AS stale(id, marker) "
        "WHERE chat.\"id\" = stale.id::uuid AND chat.\"mark\"\"er\" = stale.marker::text");
}

TEST_CASE("repairParameters: two text array literals, every element quoted, with double quotes and backslashes escaped", "[unit]") {
  CHECK(protocol::repairParameters({}) == protocol::SqlParams{std::string("{}"), std::string("{}")});
  CHECK(protocol::repairParameters({{"a", "s1"}, {"b", "s2"}}) ==
        protocol::SqlParams{std::string("{\"a\",\"b\"}"), std::string("{\"s1\",\"s2\"}")});
  CHECK(protocol::repairParameters({{"q\"uote", "back\\slash"}}) ==
        protocol::SqlParams{std::string("{\"q\\\"uote\"}"), std::string("{\"back\\\\slash\"}")});
  // Braces, commas, spaces and NULL spelled out stay text inside the quotes.
  CHECK(protocol::repairParameters({{"{x},y", "NULL"}}) ==
        protocol::SqlParams{std::string("{\"{x},y\"}"), std::string("{\"NULL\"}")});
}

TEST_CASE("writeMarkerStatement: UPDATE t SET marker = $2 WHERE id = $1", "[unit]") {
  RepairOptions table;
  table.table = "chats\"1";
  const auto statement = protocol::writeMarkerStatement(table, "chat-1", "stream-1");
  CHECK(statement.sql == "UPDATE \"chats\"\"1\" SET \"conversation_id\" = $2 WHERE \"id\" = $1");
  CHECK(statement.params == protocol::SqlParams{std::string("chat-1"), std::string("stream-1")});
}

TEST_CASE("clearMarkerStatement: compare-and-clear, UPDATE t SET marker = NULL WHERE id = $1 AND marker = $2",
          "[unit]") {
  const auto statement = protocol::clearMarkerStatement(RepairOptions{}, "chat-1", "stream-1");
  CHECK(statement.sql ==
        "UPDATE \"copilot_chats\" SET \"conversation_id\" = NULL WHERE \"id\" = $1 AND \"conversation_id\" = $2");
  CHECK(statement.params == protocol::SqlParams{std::string("chat-1"), std::string("stream-1")});
}

// --- Against the real servers ---------------------------------------------------------------------------

namespace {

// A table like copilot_chats, named and with columns named with the characters that quoting is for.
class OddlyNamedTable {
 public:
  explicit OddlyNamedTable(test::TestDb& db)
      : db_(db), options_([] {
          RepairOptions options;
          options.table = "Chats \"" + test::uniqueId() + "\" ; x";
          options.idColumn = "The \"Id\"";
          options.markerColumn = "active stream";
          return options;
        }()) {
    db_.exec("CREATE TABLE " + protocol::quoteIdentifier(options_.table) + " (" + protocol::quoteIdentifier(options_.idColumn) +
             " uuid PRIMARY KEY DEFAULT gen_random_uuid(), " + protocol::quoteIdentifier(options_.markerColumn) +
             " text, updated_at timestamptz NOT NULL DEFAULT '2020-01-01T00:00:00Z')");
  }
  ~OddlyNamedTable() {
    try {
      db_.exec("DROP TABLE IF EXISTS " + protocol::quoteIdentifier(options_.table));
    } catch (...) {
    }
  }
  OddlyNamedTable(const OddlyNamedTable&) = delete;
  OddlyNamedTable& operator=(const OddlyNamedTable&) = delete;

  const RepairOptions& options() const { return options_; }
  std::string insert(const Value& marker) {
    return *db_.scalar("INSERT INTO " + protocol::quoteIdentifier(options_.table) + " (" +
                           protocol::quoteIdentifier(options_.markerColumn) + ") VALUES ($1) RETURNING " +
                           protocol::quoteIdentifier(options_.idColumn),
                       {marker});
  }
  Value marker(const std::string& id) {
    return db_.scalar("SELECT " + protocol::quoteIdentifier(options_.markerColumn) + " FROM " +
                          protocol::quoteIdentifier(options_.table) + " WHERE " +
                          protocol::quoteIdentifier(options_.idColumn) + " = $1",
                      {id});
  }
  std::string updatedAt(const std::string& id) {
    return *db_.scalar("SELECT updated_at::text FROM " + protocol::quoteIdentifier(options_.table) + " WHERE " +
                           protocol::quoteIdentifier(options_.idColumn) + " = $1",
                       {id});
  }
  void setMarker(const std::string& id, const Value& marker) {
    db_.exec("UPDATE " + protocol::quoteIdentifier(options_.table) + " SET " +
                 protocol::quoteIdentifier(options_.markerColumn) + " = $2 WHERE " +
                 protocol::quoteIdentifier(options_.idColumn) + " = $1",
             {id, marker});
  }

 private:
  test::TestDb& db_;
  const RepairOptions options_;
};

// (column name -> type) from columnTypesQuery run as is.
std::unordered_map<std::string, std::string> columnTypes(test::TestDb& db, const RepairOptions& options) {
  const auto query = protocol::columnTypesQuery(options);
  const test::SqlResult rows = db.exec(query.sql, query.params);
  std::unordered_map<std::string, std::string> types;
  for (int row = 0; row < PQntuples(rows.get()); ++row) {
    types.emplace(PQgetvalue(rows.get(), row, 0), PQgetvalue(rows.get(), row, 1));
  }
  return types;
}

long long affectedRows(const test::SqlResult& result) { return std::stoll(PQcmdTuples(result.get())); }

}  // namespace

TEST_CASE("PostgreSQL: columnTypesQuery finds the id and marker types of a table whatever its names") {
  test::TestDb db;
  SECTION("the demo shape (copilot_chats-like, plain names)") {
    test::ChatsTable chats(db);
    RepairOptions options;
    options.table = chats.name();
    CHECK(columnTypes(db, options) ==
          std::unordered_map<std::string, std::string>{{"id", "uuid"}, {"conversation_id", "text"}});
  }
  SECTION("names with quotes, spaces and a semicolon") {
    OddlyNamedTable table(db);
    CHECK(columnTypes(db, table.options()) ==
          std::unordered_map<std::string, std::string>{{"The \"Id\"", "uuid"}, {"active stream", "text"}});
  }
  SECTION("a missing table finds nothing (and is no error)") {
    RepairOptions options;
    options.table = "no_such_table_" + test::uniqueId();
    CHECK(columnTypes(db, options).empty());
  }
}

TEST_CASE("PostgreSQL: repairSql with repairParameters clears exactly the stale markers whose value is unchanged") {
  test::TestDb db;
  OddlyNamedTable table(db);
  const auto types = columnTypes(db, table.options());
  REQUIRE(types.size() == 2);
  const auto sql = protocol::repairSql(table.options(), types.at(table.options().idColumn),
                                       types.at(table.options().markerColumn));

  // Markers with the characters a text[] literal must escape.
  const std::string quoted = "stream \"quoted\"";
  const std::string backslashed = "stream\\with\\backslashes\\";
  const std::string punctuated = "{stream},with,\"all\"\\ of it, NULL";
  const auto staleQuoted = table.insert(quoted);
  const auto staleBackslashed = table.insert(backslashed);
  const auto stalePunctuated = table.insert(punctuated);
  const auto changed = table.insert(std::string("stream-old"));
  const auto untouched = table.insert(std::string("stream-not-stale"));
  const auto cleared = table.insert(std::nullopt);
  table.setMarker(changed, std::string("stream-new"));  // a stream started after the read

  const std::vector<StaleMarker> stale{{staleQuoted, quoted},
                                       {staleBackslashed, backslashed},
                                       {stalePunctuated, punctuated},
                                       {changed, "stream-old"},
                                       {cleared, "stream-whatever"}};
  const auto result = db.exec(sql, protocol::repairParameters(stale));
  CHECK(affectedRows(result) == 3);
  CHECK(table.marker(staleQuoted) == std::nullopt);
  CHECK(table.marker(staleBackslashed) == std::nullopt);
  CHECK(table.marker(stalePunctuated) == std::nullopt);
  CHECK(table.marker(changed) == Value("stream-new"));  // never clobbered
  CHECK(table.marker(untouched) == Value("stream-not-stale"));
  CHECK(table.marker(cleared) == std::nullopt);
  CHECK(table.updatedAt(staleQuoted) == "2020-01-01 00:00:00+00");  // only the marker column is written

  // Run again: nothing left to clear.
  CHECK(affectedRows(db.exec(sql, protocol::repairParameters(stale))) == 0);
  // An empty batch is a valid statement that clears nothing.
  CHECK(affectedRows(db.exec(sql, protocol::repairParameters({}))) == 0);
}

TEST_CASE("PostgreSQL: writeMarkerStatement sets the marker, clearMarkerStatement clears only its own") {
  test::TestDb db;
  OddlyNamedTable table(db);
  const auto chat = table.insert(std::nullopt);

  const auto write = protocol::writeMarkerStatement(table.options(), chat, "stream \"1\"");
  CHECK(affectedRows(db.exec(write.sql, write.params)) == 1);
  CHECK(table.marker(chat) == Value("stream \"1\""));

  const auto clearOther = protocol::clearMarkerStatement(table.options(), chat, "stream-2");
  CHECK(affectedRows(db.exec(clearOther.sql, clearOther.params)) == 0);
  CHECK(table.marker(chat) == Value("stream \"1\""));

  const auto clearOwn = protocol::clearMarkerStatement(table.options(), chat, "stream \"1\"");
  CHECK(affectedRows(db.exec(clearOwn.sql, clearOwn.params)) == 1);
  CHECK(table.marker(chat) == std::nullopt);
  CHECK(table.updatedAt(chat) == "2020-01-01 00:00:00+00");
}

namespace {

// Runs a Command (argv) on the test's own connection; the reply's integer.
long long evalInteger(test::TestRedis& redis, const Command& command) {
  const test::Reply reply = redis.ok(command);
  REQUIRE(reply->type == REDIS_REPLY_INTEGER);
  return reply->integer;
}

}  // namespace

TEST_CASE("Redis: acquireCommand takes a free lock with the TTL, and not a held one") {
  test::TestRedis redis(test::redisUrl());
  const std::string key = protocol::lockKey(test::uniquePrefix(), "chat-1");

  const test::Reply first = redis.ok(protocol::acquireCommand(key, "stream-1", 60s));
  CHECK(first->type == REDIS_REPLY_STATUS);
  CHECK(std::string(first->str, first->len) == "OK");
  CHECK(redis.get(key) == Value("stream-1"));
  CHECK(redis.pttl(key) > 59000);
  CHECK(redis.pttl(key) <= 60000);

  const test::Reply second = redis.ok(protocol::acquireCommand(key, "stream-2", 60s));
  CHECK(second->type == REDIS_REPLY_NIL);  // busy
  CHECK(redis.get(key) == Value("stream-1"));
  redis.del(key);
}

TEST_CASE("Redis: kExtendScript extends only the caller's own value") {
  test::TestRedis redis(test::redisUrl());
  const std::string key = protocol::lockKey(test::uniquePrefix(), "chat-1");
  redis.setPx(key, "stream-1", 5000);

  CHECK(evalInteger(redis, protocol::extendCommand(key, "stream-1", 60s)) == 1);
  CHECK(redis.pttl(key) > 59000);

  redis.setPx(key, "stream-1", 5000);
  CHECK(evalInteger(redis, protocol::extendCommand(key, "stream-other", 60s)) == 0);  // another owner: lost
  CHECK(redis.pttl(key) <= 5000);
  CHECK(redis.get(key) == Value("stream-1"));

  redis.del(key);
  CHECK(evalInteger(redis, protocol::extendCommand(key, "stream-1", 60s)) == 0);  // gone: lost
  CHECK_FALSE(redis.exists(key));  // the extend never recreates the key
}

TEST_CASE("Redis: kReleaseScript deletes only the caller's own value") {
  test::TestRedis redis(test::redisUrl());
  const std::string key = protocol::lockKey(test::uniquePrefix(), "chat-1");
  redis.set(key, "stream-1");

  CHECK(evalInteger(redis, protocol::releaseCommand(key, "stream-other")) == 0);
  CHECK(redis.get(key) == Value("stream-1"));
  CHECK(evalInteger(redis, protocol::releaseCommand(key, "stream-1")) == 1);
  CHECK_FALSE(redis.exists(key));
  CHECK(evalInteger(redis, protocol::releaseCommand(key, "stream-1")) == 0);  // already gone
}

TEST_CASE("Redis: planLookup's MGETs answer in key order and verifiedOwners reads them") {
  test::TestRedis redis(test::redisUrl());
  const std::string prefix = test::uniquePrefix();
  const auto chats = sequence("chat-", 25);
  for (int i = 0; i < 25; i += 3) redis.set(protocol::lockKey(prefix, chats[static_cast<std::size_t>(i)]), "stream-" + std::to_string(i));
  redis.set(protocol::lockKey(prefix, "chat-1"), "");  // an empty value is no owner

  const auto plan = protocol::planLookup(chats, prefix, 10);
  REQUIRE(plan.commands.size() == 3);
  std::vector<Value> values;
  for (const auto& command : plan.commands) {
    const test::Reply reply = redis.ok(command);
    REQUIRE(reply->type == REDIS_REPLY_ARRAY);
    for (std::size_t i = 0; i < reply->elements; ++i) {
      const redisReply* element = reply->element[i];
      values.push_back(element->type == REDIS_REPLY_STRING ? Value(std::string(element->str, element->len))
                                                           : std::nullopt);
    }
  }
  Owners expected;
  for (int i = 0; i < 25; i += 3) expected.emplace("chat-" + std::to_string(i), "stream-" + std::to_string(i));
  const auto active = protocol::verifiedOwners(plan, values);
  CHECK(active.status == LookupStatus::Verified);
  CHECK(active.owners == expected);
}
