// rediss:// end to end, as a service uses it: a Client against a TLS-only redis-server verifies
// the server (CA file, host name or IP), presents a client certificate when asked, and treats every
// failure as a failed Redis call (unknown on the read path), never a crash or a plaintext fallback.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "acquired.h"
#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "net_faults.h"
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

// --- Handshake failures on every path, passwords, large replies -----------------------------------

namespace {

std::string allOf(const test::CapturedLog& log) {
  std::string out;
  for (const auto& line : log.messages()) out += line + "\n";
  return out;
}

}  // namespace

TEST_CASE("rediss:// to a server that never completes the handshake: deadlines met, the log says why") {
  const auto& certs = test::testCertificates();
  test::SilentListener silent;  // the TCP connect completes, no ServerHello ever comes
  test::CapturedLog log;
  auto options = test::clientOptions(rediss("127.0.0.1", silent.port()), log);
  options.redis.tls.caFile = certs.caFile();
  Client client(options);

  auto start = std::chrono::steady_clock::now();
  CHECK(client.getActiveChatStreamIds({"chat-1"}).status == LookupStatus::Unknown);
  CHECK(test::elapsedSince(start) < 1s);
  start = std::chrono::steady_clock::now();
  const auto acquired = test::acquire(client, "chat-1", "stream-1");
  REQUIRE(acquired.error.has_value());
  const std::string acquireError = acquired.what;
  CHECK(test::elapsedSince(start) < 2s);
  const std::string stalled = "the TLS handshake with 127.0.0.1:" + std::to_string(silent.port()) + " did not finish";
  (void)test::waitUntil([&] { return log.contains(stalled); }, 3s);
  INFO("acquire: " << acquireError << "\nlog:\n" << allOf(log));
  CHECK(log.contains("warning: connecting to Redis at 127.0.0.1:" + std::to_string(silent.port()) + " timed out (" + stalled + ")"));
  CHECK(acquireError.find(stalled) != std::string::npos);
  CHECK_FALSE(log.contains("no address"));
  CHECK(acquireError.find("no address") == std::string::npos);
}

TEST_CASE("rediss:// with the wrong CA, write path only: the acquire fails and the reason is logged at warning") {
  const auto& certs = test::testCertificates();
  test::RedisServerProcess server = test::RedisServerProcess::withTls(certs.redisTls());
  test::CapturedLog log;
  auto options = test::clientOptions(rediss("127.0.0.1", server.port()), log);
  options.redis.tls.caFile = certs.otherCaFile();
  Client client(options);
  const auto acquired = test::acquire(client, "chat-1", "stream-1");
  REQUIRE(acquired.error.has_value());
  const std::string acquireError = acquired.what;
  const std::string peer = "127.0.0.1:" + std::to_string(server.port());
  (void)test::waitUntil([&] { return log.contains("certificate verify failed"); }, 3s);
  INFO("acquire: " << acquireError << "\nlog:\n" << allOf(log));
  CHECK(acquireError.find("certificate verify failed") != std::string::npos);
  CHECK(log.contains("warning: connecting to Redis at " + peer + " failed: TLS handshake with " + peer +
                     " failed: certificate verify failed: "));
}

TEST_CASE("rediss://user:p%40ss@host: the password is percent-decoded, and never logged") {
  const auto& certs = test::testCertificates();
  test::RedisServerProcess server =
      test::RedisServerProcess::withTls(certs.redisTls(), {"--user", "alice", "on", ">p@ss:w/rd", "~*", "&*", "+@all"});
  SECTION("right password") {
    test::CapturedLog log;
    auto options = test::clientOptions("rediss://alice:p%40ss%3Aw%2Frd@127.0.0.1:" + std::to_string(server.port()) + "/0", log);
    options.redis.tls.caFile = certs.caFile();
    Client client(options);
    INFO(allOf(log));
    CHECK(client.getActiveChatStreamIds({"chat-1"}).status == LookupStatus::Verified);
    auto lock = client.acquireStreamLock("chat-1", "stream-1");
    CHECK(lock);
  }
  SECTION("wrong password") {
    test::CapturedLog log;
    auto options = test::clientOptions("rediss://alice:s3cr%40t-xyz@127.0.0.1:" + std::to_string(server.port()) + "/0", log);
    options.redis.tls.caFile = certs.caFile();
    Client client(options);
    CHECK(client.getActiveChatStreamIds({"chat-1"}).status == LookupStatus::Unknown);
    const std::string acquireError = test::acquire(client, "chat-1", "stream-1").what;
    const std::string all = allOf(log) + acquireError;
    INFO(all);
    CHECK_FALSE(all.empty());
    CHECK(all.find("s3cr") == std::string::npos);
  }
}

TEST_CASE("rediss:// lookup with a reply of megabytes (many TLS records), then one that stalls mid-reply") {
  const auto& certs = test::testCertificates();
  test::RedisServerProcess server = test::RedisServerProcess::withTls(certs.redisTls());
  test::CapturedLog log;
  auto options = test::clientOptions(rediss("127.0.0.1", server.port()), log);
  options.redis.tls.caFile = certs.caFile();
  options.redis.lookupDeadline = 5000ms;
  Client client(options);
  std::vector<std::string> chats;
  std::vector<streamlock::StreamLock> locks;
  const std::string longId(4000, 's');
  for (int i = 0; i < 3000; ++i) {
    chats.push_back("chat-" + std::to_string(i));
    auto lock = client.acquireStreamLock(chats.back(), longId + std::to_string(i));
    REQUIRE(lock);
    locks.push_back(std::move(*lock));
  }
  for (int round = 0; round < 3; ++round) {
    const auto active = client.getActiveChatStreamIds(chats);
    REQUIRE(active.status == LookupStatus::Verified);
    CHECK(active.owners.size() == chats.size());
    CHECK(active.owners.at("chat-2999") == longId + "2999");
  }
  // The server stops while (or before) it sends the next big reply: the lookup meets its deadline.
  std::thread pauser([&] {
    std::this_thread::sleep_for(1ms);
    server.pause();
  });
  const auto start = std::chrono::steady_clock::now();
  const auto stalled = client.getActiveChatStreamIds(chats);
  const auto took = test::elapsedSince(start);
  pauser.join();
  server.resume();
  INFO("status " << static_cast<int>(stalled.status) << " in " << took.count() << " ms");
  CHECK(took < 7s);
  // And a lookup works again (a fresh connection, or the same one once resumed).
  CHECK(test::waitUntil([&] { return client.getActiveChatStreamIds(chats).status == LookupStatus::Verified; }, 10s));
  for (auto& lock : locks) (void)lock.release();
}

TEST_CASE("rediss://localhost to a server whose certificate names localhost only in its CN: refused") {
  test::TlsCertificates certs;  // private: its "localhost" certificate is replaced
  const test::CertAndKey cnOnly = certs.issue("localhost", "IP:127.0.0.1", "serverAuth");
  test::RedisServerProcess server = test::RedisServerProcess::withTls(certs.redisTls(cnOnly));
  test::CapturedLog log;
  auto options = test::clientOptions(rediss("localhost", server.port()), log);
  options.redis.tls.caFile = certs.caFile();
  Client client(options);
  CHECK(client.getActiveChatStreamIds({"chat-1"}).status == LookupStatus::Unknown);
  CHECK(test::waitUntil([&] { return log.contains("hostname mismatch"); }, 2s));
}
