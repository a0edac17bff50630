#pragma once

#include <string>
#include <string_view>

namespace streamlock::detail {

// redis://[user:password@]host[:port][/db] (rediss:// for TLS), user and password
// percent-decoded, host a name, an IPv4 address or a bracketed IPv6 address.
struct RedisUrl {
  bool tls = false;      // rediss://
  std::string host;
  int port = 6379;
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
