// PgPool: parameterised statements, SQL errors with their SQLSTATE, client-side deadlines,
// reconnecting after the server killed a connection, the pool bound, and bad conninfo.
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <optional>
#include <string>

#include "capture_log.h"
#include "env.h"
#include "error_of.h"
#include "net_faults.h"
#include "pg.h"
#include "streamlock/error.h"
#include "streamlock/postgres.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::PgPool;
using streamlock::PostgresOptions;
using namespace std::chrono_literals;
namespace test = streamlock::test;
using streamlock::test::errorOf;

namespace {

PostgresOptions poolOptions(std::size_t poolSize = 2) {
  PostgresOptions options;
  options.conninfo = test::databaseUrl();
  options.poolSize = poolSize;
  return options;
}

}  // namespace

TEST_CASE("execute: text parameters, NULLs and unicode round-trip") {
  test::CapturedLog log;
  PgPool pool(poolOptions(), log.logger());
  const std::string unicode = "h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac";
  const auto result = pool.execute("SELECT $1::text AS a, $2::text AS b, $3::text AS c, 42 AS d",
                                   {unicode, std::nullopt, std::string()});
  REQUIRE(result.rows() == 1);
  CHECK(result.columns() == 4);
  CHECK(result.column("a") == 0);
  CHECK(result.column("b") == 1);
  CHECK(result.column("nope") == -1);
  CHECK(result.value(0, 0) == unicode);
  CHECK(result.isNull(0, 1));
  CHECK(result.optional(0, 1) == std::nullopt);
  CHECK_FALSE(result.isNull(0, 2));
  CHECK(result.optional(0, 2) == std::optional<std::string>(""));
  CHECK(result.value(0, 3) == "42");
}

TEST_CASE("execute: several rows and affectedRows") {
  test::TestDb db;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  PgPool pool(poolOptions(), log.logger());
  for (int i = 0; i < 3; ++i) chats.insert("stream-" + std::to_string(i));

  const auto updated =
      pool.execute("UPDATE " + chats.name() + " SET conversation_id = NULL WHERE conversation_id <> $1", {"stream-1"});
  CHECK(updated.affectedRows() == 2);
  const auto rows = pool.execute("SELECT conversation_id FROM " + chats.name() + " ORDER BY conversation_id NULLS LAST");
  REQUIRE(rows.rows() == 3);
  CHECK(rows.value(0, 0) == "stream-1");
  CHECK(rows.isNull(1, 0));
  CHECK(rows.isNull(2, 0));
}

TEST_CASE("a SQL error is a ServerError with its SQLSTATE and the pool still works") {
  test::CapturedLog log;
  PgPool pool(poolOptions(1), log.logger());
  const auto missing = errorOf([&] { pool.execute("SELECT * FROM no_such_table_streamlock"); });
  REQUIRE(missing);
  CHECK(missing->code() == ErrorCode::ServerError);
  CHECK(missing->sqlstate() == "42P01");

  const auto division = errorOf([&] { pool.execute("SELECT 1 / $1::int", {"0"}); });
  REQUIRE(division);
  CHECK(division->code() == ErrorCode::ServerError);
  CHECK(division->sqlstate() == "22012");

  CHECK(pool.execute("SELECT 1").value(0, 0) == "1");
}

TEST_CASE("a parameter holding a NUL byte is an invalid argument, never a truncated value") {
  test::CapturedLog log;
  PgPool pool(poolOptions(1), log.logger());
  const auto error = errorOf([&] { pool.execute("SELECT $1::text", {std::string("own\0junk", 8)}); });
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::InvalidArgument);
  CHECK(pool.execute("SELECT $1::text", {"own"}).value(0, 0) == "own");
}

TEST_CASE("a statement past its deadline is a Timeout, cancelled on the server, and the pool still works") {
  test::TestDb db;
  test::CapturedLog log;
  PgPool pool(poolOptions(1), log.logger());
  const std::string tag = "streamlock-timeout-" + test::uniqueId();
  const std::string sql = "SELECT pg_sleep(30) /* " + tag + " */";

  const auto start = std::chrono::steady_clock::now();
  const auto timeout = errorOf([&] { pool.execute(sql, {}, 200ms); });
  const auto elapsed = test::elapsedSince(start);
  REQUIRE(timeout);
  CHECK(timeout->code() == ErrorCode::Timeout);
  CHECK(elapsed < 5s);

  // Cancelled, not left running for 30 s.
  CHECK(test::waitUntil([&] {
    return db.number("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND strpos(query, $1) > 0",
                     {tag}) == 0;
  }));
  CHECK(pool.execute("SELECT 2").value(0, 0) == "2");
}

TEST_CASE("the default statementTimeout bounds a statement given no timeout") {
  test::CapturedLog log;
  auto options = poolOptions(1);
  options.statementTimeout = 200ms;
  PgPool pool(options, log.logger());
  const auto start = std::chrono::steady_clock::now();
  const auto timeout = errorOf([&] { pool.execute("SELECT pg_sleep(30)"); });
  REQUIRE(timeout);
  CHECK(timeout->code() == ErrorCode::Timeout);
  CHECK(test::elapsedSince(start) < 5s);
}

TEST_CASE("the pool reconnects after the server terminated its connection") {
  test::TestDb db;
  test::CapturedLog log;
  PgPool pool(poolOptions(1), log.logger());
  const auto firstPid = std::string(pool.execute("SELECT pg_backend_pid()").value(0, 0));

  REQUIRE(db.scalar("SELECT pg_terminate_backend($1::int)", {firstPid}) == std::optional<std::string>("t"));
  REQUIRE(test::waitUntil(
      [&] { return db.number("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", {firstPid}) == 0; }));

  // The same statement (prepared on the dead connection) runs on a fresh one.
  const auto secondPid = std::string(pool.execute("SELECT pg_backend_pid()").value(0, 0));
  CHECK(secondPid != firstPid);
  CHECK(pool.execute("SELECT $1::int + 1", {"41"}).value(0, 0) == "42");
}

TEST_CASE("the pool is bounded: PoolExhausted when no connection frees up in time") {
  test::TestDb db;
  test::CapturedLog log;
  auto options = poolOptions(1);
  options.acquireTimeout = 200ms;
  PgPool pool(options, log.logger());
  const std::string tag = "streamlock-busy-" + test::uniqueId();

  auto busy = std::async(std::launch::async, [&]() -> std::optional<std::string> {
    try {
      pool.execute("SELECT pg_sleep(3) /* " + tag + " */", {}, 20s);
      return std::nullopt;
    } catch (const Error& error) {
      return std::string(error.what());
    }
  });
  const bool running = test::waitUntil([&] {
    return db.number("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND strpos(query, $1) > 0",
                     {tag}) == 1;
  });
  const auto start = std::chrono::steady_clock::now();
  const auto exhausted = errorOf([&] { pool.execute("SELECT 1"); });
  const auto elapsed = test::elapsedSince(start);
  const auto busyError = busy.get();

  CHECK(running);
  REQUIRE(exhausted);
  CHECK(exhausted->code() == ErrorCode::PoolExhausted);
  CHECK(elapsed < 5s);
  CHECK(busyError == std::nullopt);
  CHECK(pool.stats().open <= 1);
  CHECK(pool.execute("SELECT 1").value(0, 0) == "1");
}

TEST_CASE("stats: connections open lazily and return to the pool") {
  test::CapturedLog log;
  PgPool pool(poolOptions(3), log.logger());
  CHECK(pool.stats().open == 0);
  pool.execute("SELECT 1");
  CHECK(pool.stats().open == 1);
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("a conninfo that does not parse is an invalid argument without its password") {
  test::CapturedLog log;
  PostgresOptions options;
  options.conninfo = "password=s3cr3t-pw this is not a conninfo";
  const auto error = errorOf([&] { PgPool pool(options, log.logger()); });
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::InvalidArgument);
  CHECK(std::string(error->what()).find("s3cr3t-pw") == std::string::npos);
}

TEST_CASE("a closed port is ConnectFailed at first use, quickly") {
  test::CapturedLog log;
  PostgresOptions options;
  options.conninfo = "host=127.0.0.1 port=" + std::to_string(test::closedPort()) +
                     " dbname=streamlock user=streamlock password=s3cr3t-pw";
  PgPool pool(options, log.logger());  // connects lazily: no error yet
  const auto start = std::chrono::steady_clock::now();
  const auto error = errorOf([&] { pool.execute("SELECT 1"); });
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::ConnectFailed);
  CHECK(test::elapsedSince(start) < 5s);
  CHECK(std::string(error->what()).find("s3cr3t-pw") == std::string::npos);
  CHECK_FALSE(log.contains("s3cr3t-pw"));
}

TEST_CASE("a server that never answers the startup is bounded by connectTimeout") {
  test::SilentListener silent;
  test::CapturedLog log;
  PostgresOptions options;
  options.conninfo = "host=127.0.0.1 port=" + std::to_string(silent.port()) + " dbname=x user=x";
  options.connectTimeout = 300ms;
  PgPool pool(options, log.logger());
  const auto start = std::chrono::steady_clock::now();
  const auto error = errorOf([&] { pool.execute("SELECT 1"); });
  const auto elapsed = test::elapsedSince(start);
  REQUIRE(error);
  CHECK((error->code() == ErrorCode::Timeout || error->code() == ErrorCode::ConnectFailed));
  CHECK(elapsed < 5s);  // no hang: the connect deadline ends the wait
}

TEST_CASE("close: later calls throw ShutDown") {
  test::CapturedLog log;
  PgPool pool(poolOptions(), log.logger());
  pool.execute("SELECT 1");
  pool.close();
  const auto error = errorOf([&] { pool.execute("SELECT 1"); });
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::ShutDown);
}

TEST_CASE("a conninfo URI that does not parse is refused without its password, wherever the password is") {
  test::CapturedLog log;
  PostgresOptions options;
  SECTION("the password in the query string") {
    options.conninfo = "postgresql://postgres@127.0.0.1:5432/db?password=s3cr3t-pw&no_such_option=1";
  }
  SECTION("a password with a malformed percent-escape, which libpq quotes back") {
    options.conninfo = "postgresql://postgres:s3cr3t-pw%zz@127.0.0.1:5432/db";
  }
  const auto error = errorOf([&] { PgPool pool(options, log.logger()); });
  REQUIRE(error);
  INFO(error->what());
  CHECK(error->code() == ErrorCode::InvalidArgument);
  CHECK(std::string(error->what()).find("s3cr3t-pw") == std::string::npos);
  CHECK_FALSE(log.contains("s3cr3t-pw"));
}
