// rediss:// end to end, as a service uses it: a Client against a TLS-only redis-server verifies
// the server (CA file, host name or IP), presents a client certificate when asked, and treats every
// failure as a failed Redis call (unknown on the read path), never a crash or a plaintext fallback.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "tls_certs.h"

using streamlock::Client;
using streamlock::LookupStatus;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

std::string rediss(const std::string& host, int port) { return "rediss://" + host + ":" + std::to_string(port) + "/0"; }

}  // namespace

TEST_CASE("rediss:// with the right CA: lookups verified and the lock lifecycle works, by IP and by name") {
  const auto& certs = test::testCertificates();
  test::RedisServerProcess server = test::RedisServerProcess::withTls(certs.redisTls());
  const std::string host = GENERATE(std::string("127.0.0.1"), std::string("localhost"));
  INFO("host " << host);
  test::CapturedLog log;
  auto options = test::clientOptions(rediss(host, server.port()), log);
  options.redis.tls.caFile = certs.caFile();
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  const auto active = client.getActiveChatStreamIds({"chat-1", "chat-2"});
  CHECK(active.status == LookupStatus::Verified);
  CHECK(active.owners.at("chat-1") == "stream-1");
  CHECK(active.owners.count("chat-2") == 0);
  CHECK(lock->release() == streamlock::ReleaseOutcome::Released);
  CHECK(client.redisStatus().mode == streamlock::RedisStatus::Mode::Verified);
}

namespace {

enum class Fault { WrongCa, OtherName, Plaintext };

// Non-movable, so made in place (C++17 guaranteed elision) for the case at hand.
test::RedisServerProcess serverFor(Fault fault) {
  const auto& certs = test::testCertificates();
  if (fault == Fault::OtherName) return test::RedisServerProcess::withTls(certs.redisTls(certs.otherName()));
  if (fault == Fault::WrongCa) return test::RedisServerProcess::withTls(certs.redisTls());
  return test::RedisServerProcess();
}

}  // namespace

TEST_CASE("rediss:// fails closed: a wrong CA, a wrong host name or a plaintext server is unknown, with the reason logged") {
  const auto& certs = test::testCertificates();
  const Fault fault = GENERATE(Fault::WrongCa, Fault::OtherName, Fault::Plaintext);
  INFO("fault " << static_cast<int>(fault));
  test::RedisServerProcess server = serverFor(fault);
  test::CapturedLog log;
  auto options = test::clientOptions(rediss("127.0.0.1", server.port()), log);
  options.redis.tls.caFile = fault == Fault::WrongCa ? certs.otherCaFile() : certs.caFile();
  Client client(options);

  const auto start = std::chrono::steady_clock::now();
  const auto active = client.getActiveChatStreamIds({"chat-1"});
  const auto elapsed = test::elapsedSince(start);
  CHECK(active.status == LookupStatus::Unknown);
  CHECK(elapsed < 2s);  // the lookup deadline (250 ms), whatever the handshake does
  CHECK_THROWS_AS(client.acquireStreamLock("chat-1", "stream-1"), streamlock::Error);
  // The failed calls log the handshake's reason (a plaintext server never completes one: the
  // deadline ends it).
  if (fault == Fault::WrongCa) CHECK(test::waitUntil([&] { return log.contains("certificate verify failed"); }));
  if (fault == Fault::OtherName) CHECK(test::waitUntil([&] { return log.contains("mismatch"); }));
}

TEST_CASE("rediss:// with a server that requires a client certificate") {
  const auto& certs = test::testCertificates();
  test::RedisServerProcess server = test::RedisServerProcess::withTls(certs.redisTls(/*authClients=*/true));
  test::CapturedLog log;
  auto options = test::clientOptions(rediss("localhost", server.port()), log);
  options.redis.tls.caFile = certs.caFile();

  SECTION("presented: verified") {
    options.redis.tls.certFile = certs.client().certFile;
    options.redis.tls.keyFile = certs.client().keyFile;
    Client client(options);
    CHECK(client.getActiveChatStreamIds({"chat-1"}).status == LookupStatus::Verified);
  }
  SECTION("missing: unknown, never a crash") {
    Client client(options);
    CHECK(client.getActiveChatStreamIds({"chat-1"}).status == LookupStatus::Unknown);
  }
}

TEST_CASE("rediss:// refuses unreadable TLS files when the Client is made, naming the file") {
  test::CapturedLog log;
  auto options = test::clientOptions("rediss://127.0.0.1:6390/0", log);
  options.redis.tls.caFile = "/nonexistent/ca.pem";
  try {
    Client client(options);
    FAIL("the Client accepted a CA file that does not exist");
  } catch (const streamlock::Error& error) {
    CHECK(error.code() == streamlock::ErrorCode::InvalidArgument);
    CHECK(std::string(error.what()).find("/nonexistent/ca.pem") != std::string::npos);
  }
}
