#include "config.h"

#include "flags.h"

#include <algorithm>
#include <charconv>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace mothership {
namespace {

template <typename Number>
bool parseNumber(std::string_view text, Number& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc{} && ptr == end;
}

// "HOST:PORT" or "[IPv6]:PORT".
bool parseListen(std::string_view text, ServerConfig& config) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return false;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int number = 0;
  if (host.empty() || !parseNumber(port, number) || number < 0 || number > 65535) return false;
  config.host = std::string(host);
  config.port = number;
  return true;
}

// The flags that STREAMLOCK_* variables can set (all but --help and --version).
const std::vector<examples::FlagSpec> kEnvironmentFlags{
    {"--listen", true},         {"--database-url", true},     {"--redis-url", true},
    {"--redis-tls-ca", true},   {"--redis-tls-cert", true},   {"--redis-tls-key", true},
    {"--max-connections", true}, {"--threads", true},         {"--pg-pool-size", true},
    {"--pg-pipeline-depth", true},
    {"--redis-timeout-ms", true}, {"--pg-timeout-ms", true},  {"--lock-ttl-s", true},
    {"--seed-demo", false},     {"--log-format", true},
};

}  // namespace

std::string usage() {
  return std::string(R"(Usage: mothership_server [flags]

Serves the mothership chat API with active-stream markers reconciled against Redis locks.

  --listen HOST:PORT        where to listen (default 127.0.0.1:8080; port 0 picks a free one);
                            an address in use is refused
  --database-url URL        PostgreSQL URL or conninfo (default: $DATABASE_URL); required
  --redis-url URL           redis://[user:password@]host[:port][/db], rediss://... for TLS,
                            redis-sentinel://h1:p1,h2:p2[/db]?master=NAME or
                            redis-cluster://h1:p1,h2:p2 (default: $REDIS_URL); without one,
                            lookups answer "unknown" from this process alone
  --redis-tls-ca FILE       PEM CA certificates that sign the Redis server's certificate
                            (rediss://; default: the system's trust store)
  --redis-tls-cert FILE     client certificate (PEM), for a Redis that requires one
  --redis-tls-key FILE      its private key (PEM)
  --max-connections N       most open HTTP connections (default 5120, 1 to 1000000); past
                            them the longest idle one is closed, else the new one gets 503
  --threads N               the connection limit as N threads served and queued them in 0.1
                            (a thread per connection): --max-connections N + max(4N, 256);
                            --max-connections wins when both are given
  --pg-pool-size N          PostgreSQL connections (default 1); concurrent requests share them
  --pg-pipeline-depth N     statements in flight at once on one connection, from any requests
                            (libpq pipeline mode; default 32, 1 to 1024; 1: one at a time)
  --redis-timeout-ms N      deadline of one Redis lookup on the read path (default 250)
  --pg-timeout-ms N         deadline of one PostgreSQL statement (default 5000)
  --lock-ttl-s N            stream-lock TTL in seconds, 2 to 86400 (default 60)
  --seed-demo               insert a demo user, workspace and chats, and print a bearer token
                            (text logs only: JSON lines never carry a token)
  --log-format text|json    log lines as text (default) or one JSON object each
  --version                 print the version
  --help                    show this text

)") + examples::environmentHelp(kEnvironmentFlags) +
         R"(  DATABASE_URL, REDIS_URL       read when neither the flag nor its STREAMLOCK_ variable is set

Routes: GET /  GET /healthz  GET /metrics
        GET /api/mothership/chats?workspaceId=W[&scope=active|archived]
        GET /api/mothership/chats/{chatId}
)";
}

ParsedFlags parseFlags(int argc, const char* const* argv, const EnvLookup& env) {
  ServerConfig config;
  config.databaseUrl = env("DATABASE_URL");
  config.redisUrl = env("REDIS_URL");

  std::vector<std::string> fromEnvironment;
  std::string environmentError;
  if (!examples::flagsFromEnvironment(kEnvironmentFlags, env, argc, argv, fromEnvironment, environmentError)) {
    return FlagError{environmentError};
  }
  examples::FlagReader flags(argc, argv, std::move(fromEnvironment));
  bool maxConnectionsGiven = false;
  while (flags.next()) {
    const std::string_view arg = flags.name();
    const bool hasValue = flags.hasInlineValue();
    std::string_view value;
    auto takeValue = [&] { return flags.takeValue(value); };
    auto missing = [&] { return FlagError{flags.source() + " needs a value", config.logFormat}; };
    auto invalid = [&] { return FlagError{"invalid value for " + flags.source(), config.logFormat}; };

    if (arg == "--help" || arg == "-h") return ShowHelp{};
    if (arg == "--version") return ShowVersion{};
    if (arg == "--seed-demo") {
      if (hasValue) return FlagError{"--seed-demo takes no value", config.logFormat};
      config.seedDemo = true;
    } else if (arg == "--log-format") {
      if (!takeValue()) return missing();
      if (!examples::parseLogFormat(value, config.logFormat)) return invalid();
    } else if (arg == "--listen") {
      if (!takeValue()) return missing();
      if (!parseListen(value, config)) return FlagError{flags.source() + " wants HOST:PORT", config.logFormat};
    } else if (arg == "--database-url") {
      if (!takeValue()) return missing();
      config.databaseUrl = std::string(value);
    } else if (arg == "--redis-url") {
      if (!takeValue()) return missing();
      config.redisUrl = std::string(value);
    } else if (arg == "--redis-tls-ca" || arg == "--redis-tls-cert" || arg == "--redis-tls-key") {
      if (!takeValue()) return missing();
      if (value.empty()) return invalid();
      std::string& file = arg == "--redis-tls-ca" ? config.redisTlsCa
                          : arg == "--redis-tls-cert" ? config.redisTlsCert
                                                       : config.redisTlsKey;
      file = std::string(value);
    } else if (arg == "--max-connections") {
      if (!takeValue()) return missing();
      if (!parseNumber(value, config.maxConnections) || config.maxConnections == 0 ||
          config.maxConnections > 1000000) {
        return invalid();
      }
      maxConnectionsGiven = true;
    } else if (arg == "--threads") {
      if (!takeValue()) return missing();
      std::size_t threads = 0;
      if (!parseNumber(value, threads) || threads == 0 || threads > 4096) return invalid();
      if (!maxConnectionsGiven) config.maxConnections = threads + std::max<std::size_t>(threads * 4, 256);
    } else if (arg == "--pg-pool-size") {
      if (!takeValue()) return missing();
      if (!parseNumber(value, config.pgPoolSize) || config.pgPoolSize == 0 || config.pgPoolSize > 1024) {
        return invalid();
      }
    } else if (arg == "--pg-pipeline-depth") {
      if (!takeValue()) return missing();
      if (!parseNumber(value, config.pgPipelineDepth) || config.pgPipelineDepth == 0 ||
          config.pgPipelineDepth > 1024) {
        return invalid();
      }
    } else if (arg == "--redis-timeout-ms") {
      if (!takeValue()) return missing();
      long ms = 0;
      if (!parseNumber(value, ms) || ms <= 0 || ms > 60000) return invalid();
      config.redisTimeout = std::chrono::milliseconds{ms};
    } else if (arg == "--pg-timeout-ms") {
      if (!takeValue()) return missing();
      long ms = 0;
      if (!parseNumber(value, ms) || ms <= 0 || ms > 600000) return invalid();
      config.pgTimeout = std::chrono::milliseconds{ms};
    } else if (arg == "--lock-ttl-s") {
      if (!takeValue()) return missing();
      long seconds = 0;
      // At least 2: the heartbeat must be answered (1 s) with 500 ms to spare inside the TTL.
      if (!parseNumber(value, seconds) || seconds < 2 || seconds > 86400) return invalid();
      config.lockTtl = std::chrono::seconds{seconds};
    } else {
      return FlagError{"unknown flag " + std::string(arg), config.logFormat};
    }
  }

  if (config.databaseUrl.empty()) {
    return FlagError{"no database: give --database-url or set STREAMLOCK_DATABASE_URL or DATABASE_URL",
                     config.logFormat};
  }
  if (config.seedDemo && config.logFormat == examples::LogFormat::Json) {
    return FlagError{"--seed-demo prints a bearer token, which JSON log lines never carry: use --log-format text",
                     config.logFormat};
  }
  if (config.redisTlsCert.empty() != config.redisTlsKey.empty()) {
    return FlagError{"--redis-tls-cert and --redis-tls-key go together", config.logFormat};
  }
  return config;
}

}  // namespace mothership
