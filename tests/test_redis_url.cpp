// parseRedisUrl / redactUrl: every form the library serves, every form it refuses, and no
// password in any message. Plus the Client refusing what parseRedisUrl refuses.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "redis/url.h"
#include "streamlock/client.h"
#include "streamlock/error.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::detail::parseRedisUrl;
using streamlock::detail::redactUrl;

namespace {

// The code of the Error that parseRedisUrl(url) throws; fails the test when it does not throw or
// when the message shows the secret.
ErrorCode refusal(const std::string& url, const std::string& secret = "s3cr3t-pw") {
  try {
    parseRedisUrl(url);
  } catch (const Error& error) {
    INFO("url: " << url << "\nmessage: " << error.what());
    CHECK(std::string(error.what()).find(secret) == std::string::npos);
    return error.code();
  }
  FAIL("parseRedisUrl accepted " << url);
  return ErrorCode::InvalidArgument;
}

}  // namespace

TEST_CASE("host alone: port 6379, db 0, no AUTH", "[unit]") {
  const auto url = parseRedisUrl("redis://localhost");
  CHECK(url.host == "localhost");
  CHECK(url.port == 6379);
  CHECK(url.db == 0);
  CHECK(url.user.empty());
  CHECK(url.password.empty());
}

TEST_CASE("IPv4 host with port and db", "[unit]") {
  const auto url = parseRedisUrl("redis://127.0.0.1:6390/2");
  CHECK(url.host == "127.0.0.1");
  CHECK(url.port == 6390);
  CHECK(url.db == 2);
}

TEST_CASE("db 0 given explicitly", "[unit]") {
  const auto url = parseRedisUrl("redis://redis.internal:7000/0");
  CHECK(url.host == "redis.internal");
  CHECK(url.port == 7000);
  CHECK(url.db == 0);
}

TEST_CASE("password alone (:password) authenticates without a user", "[unit]") {
  const auto url = parseRedisUrl("redis://:s3cr3t-pw@cache:6380/1");
  CHECK(url.user.empty());
  CHECK(url.password == "s3cr3t-pw");
  CHECK(url.host == "cache");
  CHECK(url.port == 6380);
  CHECK(url.db == 1);
}

TEST_CASE("user and password (ACL)", "[unit]") {
  const auto url = parseRedisUrl("redis://alice:s3cr3t-pw@cache/3");
  CHECK(url.user == "alice");
  CHECK(url.password == "s3cr3t-pw");
  CHECK(url.host == "cache");
  CHECK(url.port == 6379);
  CHECK(url.db == 3);
}

TEST_CASE("user and password are percent-decoded", "[unit]") {
  const auto url = parseRedisUrl("redis://al%69ce:p%40ss%3Aw%2Fo%25rd@cache:6379");
  CHECK(url.user == "alice");
  CHECK(url.password == "p@ss:w/o%rd");
  CHECK(url.host == "cache");
}

TEST_CASE("bracketed IPv6 host with and without port", "[unit]") {
  SECTION("with port and db") {
    const auto url = parseRedisUrl("redis://[::1]:6380/4");
    CHECK(url.host == "::1");
    CHECK(url.port == 6380);
    CHECK(url.db == 4);
  }
  SECTION("without port") {
    const auto url = parseRedisUrl("redis://[fe80::1:2]");
    CHECK(url.host == "fe80::1:2");
    CHECK(url.port == 6379);
  }
  SECTION("with credentials") {
    const auto url = parseRedisUrl("redis://:s3cr3t-pw@[::1]:7001");
    CHECK(url.host == "::1");
    CHECK(url.port == 7001);
    CHECK(url.password == "s3cr3t-pw");
  }
}

TEST_CASE("rediss URLs ask for TLS, and unix URLs are unsupported", "[unit]") {
  const auto url = parseRedisUrl("rediss://:s3cr3t-pw@cache:6380/2");
  CHECK(url.tls);
  CHECK(url.host == "cache");
  CHECK(url.port == 6380);
  CHECK(url.password == "s3cr3t-pw");
  CHECK(url.db == 2);
  CHECK_FALSE(parseRedisUrl("redis://cache").tls);
  CHECK(parseRedisUrl("REDISS://cache").tls);
  CHECK(refusal("unix:///var/run/redis.sock") == ErrorCode::Unsupported);
  CHECK(refusal("redis+unix:///var/run/redis.sock") == ErrorCode::Unsupported);
}

TEST_CASE("other schemes and malformed URLs are invalid arguments", "[unit]") {
  CHECK(refusal("") == ErrorCode::InvalidArgument);
  CHECK(refusal("http://cache:6379") == ErrorCode::InvalidArgument);
  CHECK(refusal("cache:6379") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://:6379") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://[::1") == ErrorCode::InvalidArgument);
}

TEST_CASE("a bad port is an invalid argument", "[unit]") {
  CHECK(refusal("redis://cache:") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:0") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:65536") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:-1") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:63x9") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:99999999999999999999") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://[::1]:abc") == ErrorCode::InvalidArgument);
}

TEST_CASE("a bad db is an invalid argument", "[unit]") {
  CHECK(refusal("redis://cache:6379/abc") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:6379/-1") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:6379/1x") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://cache:6379/99999999999999999999") == ErrorCode::InvalidArgument);
}

TEST_CASE("no password in any error message", "[unit]") {
  // Each URL is refused and carries the password somewhere; refusal() checks the message.
  CHECK(refusal("redis://:s3cr3t-pw@cache:notaport") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://alice:s3cr3t-pw@cache:6379/notadb") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://alice:s3cr3t-pw@") == ErrorCode::InvalidArgument);
  CHECK(refusal("rediss://alice:s3cr3t-pw@cache:bad") == ErrorCode::InvalidArgument);
  CHECK(refusal("redis://alice:s3cr3t-pw@[::1:6379") == ErrorCode::InvalidArgument);
  SECTION("nor the decoded or encoded form of a percent-encoded password") {
    CHECK(refusal("redis://:p%40ss-s3cr3t@cache:bad", "p%40ss-s3cr3t") == ErrorCode::InvalidArgument);
    CHECK(refusal("redis://:p%40ss-s3cr3t@cache:bad", "p@ss-s3cr3t") == ErrorCode::InvalidArgument);
  }
}

TEST_CASE("redactUrl hides the password and nothing else", "[unit]") {
  CHECK(redactUrl("redis://alice:s3cr3t-pw@cache:6379/0") == "redis://alice:***@cache:6379/0");
  CHECK(redactUrl("redis://:s3cr3t-pw@cache") == "redis://:***@cache");
  CHECK(redactUrl("redis://:s3cr3t-pw@[::1]:6380/2") == "redis://:***@[::1]:6380/2");
  CHECK(redactUrl("redis://cache:6379/0") == "redis://cache:6379/0");
  CHECK(redactUrl("redis://[::1]:6379") == "redis://[::1]:6379");
}

TEST_CASE("redactUrl hides the password of URLs it cannot parse", "[unit]") {
  for (const std::string url : {"rediss://alice:s3cr3t-pw@cache", "redis://:s3cr3t-pw@cache:bad",
                                "redis://alice:s3cr3t-pw@"}) {
    INFO(url);
    CHECK(redactUrl(url).find("s3cr3t-pw") == std::string::npos);
  }
}

TEST_CASE("the Client refuses a URL it cannot serve", "[unit]") {
  auto clientError = [](const std::string& url) {
    streamlock::Options options;
    options.redis.url = url;
    options.logger = [](streamlock::LogLevel, std::string_view) {};
    try {
      streamlock::Client client(options);
    } catch (const Error& error) {
      INFO("url: " << url << "\nmessage: " << error.what());
      CHECK(std::string(error.what()).find("s3cr3t-pw") == std::string::npos);
      return error.code();
    }
    FAIL("Client accepted " << url);
    return ErrorCode::InvalidArgument;
  };
  CHECK(clientError("unix://:s3cr3t-pw@/var/run/redis.sock") == ErrorCode::Unsupported);
  CHECK(clientError("redis://:s3cr3t-pw@cache:notaport") == ErrorCode::InvalidArgument);
  CHECK(clientError("http://cache") == ErrorCode::InvalidArgument);
}

// ---- Issue 11: the topology URL forms (redis-cluster://, redis-sentinel:// and their rediss-
// forms), served through the public API: the Client's constructor checks the URL and opens no
// connection, so each form is either accepted or refused here without any server. ----

namespace {

// The code of the Error that constructing a Client on url throws, or nullopt when it accepts it.
// Fails the test when a message shows the secret.
std::optional<ErrorCode> clientRefusal(const std::string& url, const std::string& secret = "s3cr3t-pw") {
  streamlock::Options options;
  options.redis.url = url;
  options.logger = [](streamlock::LogLevel, std::string_view) {};
  try {
    streamlock::Client client(options);
  } catch (const Error& error) {
    INFO("url: " << url << "\nmessage: " << error.what());
    CHECK(std::string(error.what()).find(secret) == std::string::npos);
    return error.code();
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("the Client accepts every topology URL form, each with user:password@", "[unit]") {
  const std::vector<std::string> urls{
      "redis-cluster://127.0.0.1:7000",
      "redis-cluster://10.0.0.1:7000,10.0.0.2:7001,cache-3.internal:7002",
      "redis-cluster://[::1]:7000,127.0.0.1:7001",
      "redis-cluster://:s3cr3t-pw@10.0.0.1:7000,10.0.0.2:7001",
      "redis-cluster://alice:s3cr3t-pw@10.0.0.1:7000,10.0.0.2:7001",
      "redis-cluster://al%69ce:p%40ss-s3cr3t-pw@10.0.0.1:7000",
      "rediss-cluster://10.0.0.1:7000,10.0.0.2:7001",
      "rediss-cluster://alice:s3cr3t-pw@10.0.0.1:7000,10.0.0.2:7001",
      "redis-sentinel://10.0.0.1:26379?master=mymaster",
      "redis-sentinel://10.0.0.1:26379,10.0.0.2:26380,10.0.0.3:26381?master=mymaster",
      "redis-sentinel://10.0.0.1:26379,10.0.0.2:26380/2?master=mymaster",
      "redis-sentinel://:s3cr3t-pw@10.0.0.1:26379,10.0.0.2:26380/0?master=mymaster",
      "redis-sentinel://alice:s3cr3t-pw@10.0.0.1:26379?master=mymaster",
      "redis-sentinel://[::1]:26379,127.0.0.1:26380?master=my-master.1",
      "rediss-sentinel://10.0.0.1:26379,10.0.0.2:26380?master=mymaster",
      "rediss-sentinel://alice:s3cr3t-pw@10.0.0.1:26379,10.0.0.2:26380/1?master=mymaster",
  };
  for (const auto& url : urls) {
    INFO("url: " << url);
    const auto refused = clientRefusal(url);
    INFO("refused with: " << (refused ? streamlock::toString(*refused) : "(accepted)"));
    CHECK_FALSE(refused.has_value());
  }
}

TEST_CASE("the Client refuses malformed topology URLs with InvalidArgument and no password", "[unit]") {
  const std::vector<std::string> urls{
      // cluster: no seed, an empty seed, bad ports, a database (a cluster has only db 0), a query
      "redis-cluster://",
      "redis-cluster://:s3cr3t-pw@",
      "redis-cluster://10.0.0.1:7000,,10.0.0.2:7001",
      "redis-cluster://10.0.0.1:7000,",
      "redis-cluster://:s3cr3t-pw@10.0.0.1:notaport,10.0.0.2:7001",
      "redis-cluster://alice:s3cr3t-pw@10.0.0.1:7000,10.0.0.2:65536",
      "redis-cluster://10.0.0.1:7000,[::1:7001",
      "redis-cluster://alice:s3cr3t-pw@10.0.0.1:7000/1",
      "redis-cluster://10.0.0.1:7000?master=mymaster",
      "rediss-cluster://alice:s3cr3t-pw@10.0.0.1:0",
      // sentinel: no master name, an empty one, an unknown parameter, bad ports and databases
      "redis-sentinel://10.0.0.1:26379",
      "redis-sentinel://:s3cr3t-pw@10.0.0.1:26379",
      "redis-sentinel://10.0.0.1:26379?master=",
      "redis-sentinel://10.0.0.1:26379?mastr=mymaster",
      "redis-sentinel://alice:s3cr3t-pw@10.0.0.1:26379?master=mymaster&master=other",
      "redis-sentinel://?master=mymaster",
      "redis-sentinel://10.0.0.1:26379,,10.0.0.2:26380?master=mymaster",
      "redis-sentinel://:s3cr3t-pw@10.0.0.1:bad?master=mymaster",
      "redis-sentinel://alice:s3cr3t-pw@10.0.0.1:26379/notadb?master=mymaster",
      "redis-sentinel://10.0.0.1:26379/-1?master=mymaster",
      "rediss-sentinel://alice:s3cr3t-pw@10.0.0.1:99999?master=mymaster",
      // several hosts where only one makes sense
      "redis://10.0.0.1:6379,10.0.0.2:6379",
      "rediss://:s3cr3t-pw@10.0.0.1:6379,10.0.0.2:6379/0",
  };
  for (const auto& url : urls) {
    INFO("url: " << url);
    const auto refused = clientRefusal(url);
    REQUIRE(refused.has_value());
    CHECK(*refused == ErrorCode::InvalidArgument);
  }
  SECTION("nor the decoded form of a percent-encoded password") {
    CHECK(clientRefusal("redis-cluster://:p%40ss-s3cr3t@10.0.0.1:bad", "p@ss-s3cr3t") == ErrorCode::InvalidArgument);
    CHECK(clientRefusal("redis-sentinel://:p%40ss-s3cr3t@10.0.0.1:bad?master=m", "p@ss-s3cr3t") ==
          ErrorCode::InvalidArgument);
  }
}
