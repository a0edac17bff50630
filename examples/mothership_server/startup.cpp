#include "startup.h"

#include <chrono>
#include <string>

#include <fmt/format.h>
#include <streamlock/client.h>

#include "log.h"

namespace mothership {
namespace {

constexpr auto kProgram = "mothership_server";

void reportPostgres(streamlock::PgPool& db) {
  const auto result = db.execute("SELECT current_database(), current_setting('server_version')", {},
                                 std::chrono::milliseconds{5000});
  const std::string database(result.value(0, 0));
  const std::string version(result.value(0, 1));
  examples::logLine(streamlock::LogLevel::Info, "startup_postgres",
                    fmt::format("{}: PostgreSQL up: database {}, server {}", kProgram, database, version),
                    {{"postgres", "up"}, {"database", database}, {"server_version", version}});
}

void reportRedis(streamlock::Client& client) {
  const auto status = client.redisStatus();
  const char* mode = streamlock::toString(status.mode);
  switch (status.mode) {
    case streamlock::RedisStatus::Mode::Verified:
      examples::logLine(streamlock::LogLevel::Info, "startup_redis",
                        fmt::format("{}: Redis verified: it answered PING", kProgram), {{"redis", mode}});
      break;
    case streamlock::RedisStatus::Mode::Disabled:
      examples::logLine(streamlock::LogLevel::Info, "startup_redis",
                        fmt::format("{}: Redis disabled (no --redis-url): lookups answer unknown from this "
                                    "process alone",
                                    kProgram),
                        {{"redis", mode}});
      break;
    case streamlock::RedisStatus::Mode::Unknown:
      // status.detail names the endpoint and the failure, never a password.
      examples::logLine(streamlock::LogLevel::Warning, "startup_redis",
                        fmt::format("{}: Redis unreachable: {}; lookups answer unknown and /healthz says "
                                    "degraded until it answers",
                                    kProgram, status.detail),
                        {{"redis", mode}, {"detail", status.detail}});
      break;
  }
}

}  // namespace

void reportServices(streamlock::Client& client) {
  reportPostgres(*client.postgres());
  reportRedis(client);
}

}  // namespace mothership
