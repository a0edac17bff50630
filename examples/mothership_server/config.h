#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <variant>

namespace mothership {

// Everything the command line and the environment decide.
struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (the bound port is printed)
  std::string databaseUrl;            // --database-url, else $DATABASE_URL; required
  std::string redisUrl;               // --redis-url, else $REDIS_URL; empty: Redis disabled
  std::string redisTlsCa;             // --redis-tls-ca: PEM CA file for rediss:// (empty: system store)
  std::string redisTlsCert;           // --redis-tls-cert / --redis-tls-key: client certificate
  std::string redisTlsKey;
  std::size_t threads = 256;          // HTTP worker threads; one per open connection
  std::size_t pgPoolSize = 0;         // 0: min(threads, 16)
  std::chrono::milliseconds redisTimeout{250};  // the read path's whole Redis lookup
  std::chrono::milliseconds pgTimeout{5000};    // client-side deadline of one SQL statement
  std::chrono::seconds lockTtl{60};
  bool seedDemo = false;
};

struct ShowHelp {};
struct FlagError {
  std::string message;
};

using ParsedFlags = std::variant<ServerConfig, ShowHelp, FlagError>;

// Reads an environment variable; empty when unset. Injected so that parsing stays testable.
using EnvLookup = std::function<std::string(const char* name)>;

ParsedFlags parseFlags(int argc, const char* const* argv, const EnvLookup& env);

const char* usage() noexcept;

}  // namespace mothership
