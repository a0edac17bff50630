#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace streamlock::detail {

enum class RedisTopologyKind { Standalone, Sentinel, Cluster };

struct RedisEndpoint {
  std::string host;
  int port = 6379;
};

// The URL forms, user and password percent-decoded, hosts names, IPv4 or bracketed IPv6 addresses:
//   redis://[user:password@]host[:port][/db]                          one server (rediss:// TLS)
//   redis-sentinel://[user:password@]h1[:p1][,h2[:p2]...][/db]?master=NAME   (rediss-sentinel://)
//   redis-cluster://[user:password@]h1[:p1][,h2[:p2]...]                      (rediss-cluster://)
struct RedisUrl {
  RedisTopologyKind kind = RedisTopologyKind::Standalone;
  bool tls = false;       // the rediss forms: TLS to every node, sentinels included
  std::vector<RedisEndpoint> endpoints;  // the server; the sentinels; the cluster's seed nodes
  std::string host;       // endpoints.front()
  int port = 6379;
  std::string masterName;  // sentinel: the master the sentinels name
  std::string user;      // empty: AUTH with the password alone (or no AUTH)
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECT when not 0
};

// Throws Error(InvalidArgument) for a malformed URL and Error(Unsupported) for a scheme the
// library cannot serve (unix://). Messages never contain the password.
RedisUrl parseRedisUrl(std::string_view url);

// The URL with any password replaced by "***", for logs and errors.
std::string redactUrl(std::string_view url);

}  // namespace streamlock::detail
