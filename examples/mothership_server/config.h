#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <variant>

#include "flags.h"
#include "log.h"

namespace mothership {

// Everything the command line and the environment decide.
struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (the bound port is printed)
  std::string databaseUrl;            // --database-url, else $STREAMLOCK_DATABASE_URL, else $DATABASE_URL; required
  std::string redisUrl;               // --redis-url, else $STREAMLOCK_REDIS_URL, else $REDIS_URL; empty: disabled
  std::string redisTlsCa;             // --redis-tls-ca: PEM CA file for rediss:// (empty: system store)
  std::string redisTlsCert;           // --redis-tls-cert / --redis-tls-key: client certificate
  std::string redisTlsKey;
  // The defaults are the fast configuration measured in bench/load/tuning.md.
  std::size_t maxConnections = 5120;  // open HTTP connections at once
  std::size_t pgPoolSize = 1;         // PostgreSQL connections, each a pipeline of statements
  std::size_t pgPipelineDepth = 32;   // statements in flight at once on one connection
  std::chrono::milliseconds redisTimeout{250};  // the read path's whole Redis lookup
  std::chrono::milliseconds pgTimeout{5000};    // client-side deadline of one SQL statement
  std::chrono::seconds lockTtl{60};
  bool seedDemo = false;
  examples::LogFormat logFormat = examples::LogFormat::Text;
};

struct ShowHelp {};
struct ShowVersion {};
struct FlagError {
  std::string message;
  examples::LogFormat logFormat = examples::LogFormat::Text;  // as far as it was read, to report the error
};

using ParsedFlags = std::variant<ServerConfig, ShowHelp, ShowVersion, FlagError>;

using examples::EnvLookup;

// The command line, after the STREAMLOCK_* variables of env (a flag given on the command line wins).
ParsedFlags parseFlags(int argc, const char* const* argv, const EnvLookup& env);

// The --help text, with the environment variables.
std::string usage();

}  // namespace mothership
