// The TLS half of Stream against real TLS servers (redis-server in TLS mode, openssl s_server),
// with certificates made by the openssl tool at run time: verification by CA, IP SAN and DNS SAN,
// SNI, client certificates, the failures a caller must see as ConnectFailed (never a hang, a crash
// or a plaintext fallback), partial writes of a large command, and a silent close.
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "env.h"
#include "io/stream.h"
#include "redis_server.h"
#include "subprocess.h"
#include "tls_certs.h"
#include "streamlock/error.h"

namespace test = streamlock::test;
using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::detail::Stream;
using streamlock::detail::TlsContext;
using streamlock::detail::TlsSettings;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// What a blocking driver throws when the deadline passes: never a streamlock::Error, so that a
// hang is never mistaken for the failure a test expects.
struct TimedOut : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// read() said end of stream.
struct EndOfStream : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Waits until the socket is ready for what the stream wants (poll, level-triggered like the loop).
void await(const Stream& stream, Clock::time_point deadline, const std::string& what) {
  const std::uint32_t wants = stream.wants();
  pollfd fd{stream.fd(), 0, 0};
  if ((wants & Stream::kRead) != 0) fd.events = static_cast<short>(fd.events | POLLIN);
  if ((wants & Stream::kWrite) != 0) fd.events = static_cast<short>(fd.events | POLLOUT);
  if (fd.events == 0) throw std::logic_error("the stream waits for nothing during " + what);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) throw TimedOut("timed out during " + what);
    const int ready = ::poll(&fd, 1, static_cast<int>(left.count()));
    if (ready > 0) return;
    if (ready < 0 && errno != EINTR) throw std::runtime_error("poll failed");
  }
}

Clock::time_point in(std::chrono::milliseconds timeout) { return Clock::now() + timeout; }

// Connects to host:port (its first address) and completes the TCP connect and the handshake.
std::unique_ptr<Stream> openStream(const std::string& host, int port, std::shared_ptr<TlsContext> tls,
                                   const std::string& serverName, Clock::time_point deadline) {
  auto stream = Stream::connect(streamlock::detail::resolve(host, port).front(), std::move(tls), serverName);
  while (!stream->advance()) await(*stream, deadline, "the connect and handshake");
  return stream;
}

std::unique_ptr<Stream> openStream(const test::RedisServerProcess& server, std::shared_ptr<TlsContext> tls,
                                   const std::string& serverName = "127.0.0.1") {
  return openStream("127.0.0.1", server.port(), std::move(tls), serverName, in(10s));
}

// The ConnectFailed (or other Error) that opening throws; fails the test when it opens.
Error openError(const std::string& host, int port, std::shared_ptr<TlsContext> tls, const std::string& serverName) {
  try {
    openStream(host, port, std::move(tls), serverName, in(10s));
  } catch (const Error& error) {
    return error;
  }
  FAIL("the stream opened");
  throw std::logic_error("unreachable");
}

// Writes all of data, waiting whenever the stream takes less. After each short write the rest is
// copied to a fresh buffer, so that the retry comes from another address (which OpenSSL allows
// only with SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). Returns how many writes were short.
int writeAll(Stream& stream, const std::string& data, Clock::time_point deadline) {
  std::string rest = data;
  int shortWrites = 0;
  for (;;) {
    const std::size_t written = stream.write(rest.data(), rest.size());
    if (written == rest.size()) return shortWrites;
    ++shortWrites;
    std::string moved = rest.substr(written);
    rest.swap(moved);
    await(stream, deadline, "a write");
  }
}

// Reads until at least size bytes came; throws EndOfStream when the stream ends first.
std::string readAtLeast(Stream& stream, std::size_t size, Clock::time_point deadline) {
  std::string in;
  for (;;) {
    if (!stream.read(in)) throw EndOfStream("end of stream after " + std::to_string(in.size()) + " bytes: " + in);
    if (in.size() >= size) return in;
    await(stream, deadline, "a read");
  }
}

const std::string kPing = "*1\r\n$4\r\nPING\r\n";

std::string ping(Stream& stream) {
  const auto deadline = in(10s);
  writeAll(stream, kPing, deadline);
  return readAtLeast(stream, 7, deadline);
}

std::shared_ptr<TlsContext> context(const std::string& caFile, const test::CertAndKey& client = {},
                                    bool insecure = false) {
  TlsSettings settings;
  settings.caFile = caFile;
  settings.certFile = client.certFile;
  settings.keyFile = client.keyFile;
  settings.insecureSkipVerify = insecure;
  return TlsContext::create(settings);
}

std::string peerOf(const test::RedisServerProcess& server) { return "127.0.0.1:" + std::to_string(server.port()); }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string readFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::size_t count(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// True when a TCP connect to 127.0.0.1:port succeeds now.
bool accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

TEST_CASE("verified by IP literal: 127.0.0.1 matches the certificate's IP SAN and PING answers PONG") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  const auto tls = context(certs.caFile());

  // Two streams of one context on one thread, interleaved.
  auto first = openStream(server, tls);
  auto second = openStream(server, tls);
  CHECK(first->open());
  CHECK(first->peer() == peerOf(server));
  CHECK(ping(*first) == "+PONG\r\n");
  CHECK(ping(*second) == "+PONG\r\n");
  CHECK(ping(*first) == "+PONG\r\n");
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("verified by DNS name: localhost matches the certificate's DNS SAN") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  auto stream = openStream(server, context(certs.caFile()), "localhost");
  CHECK(ping(*stream) == "+PONG\r\n");
}

TEST_CASE("verified over IPv6: ::1 matches the certificate's IP SAN") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls(), {"--bind", "127.0.0.1", "::1"});
  auto stream = openStream("::1", server.port(), context(certs.caFile()), "::1", in(10s));
  CHECK(stream->peer() == "[::1]:" + std::to_string(server.port()));
  CHECK(ping(*stream) == "+PONG\r\n");
}

TEST_CASE("SNI: sent for a DNS name, never for an IP literal (openssl s_server picks its certificate by it)") {
  const auto& certs = test::testCertificates();
  // Without SNI "localhost" the server presents the wrong-name certificate; with it, the right one.
  // -tlsextdebug logs each extension a client sends; s_server serves one connection at a time.
  const int port = test::closedPort();
  const std::string log = certs.dir() + "/s_server-" + test::uniqueId() + ".log";
  test::BackgroundProcess sServer({"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert",
                                   certs.otherName().certFile, "-key", certs.otherName().keyFile, "-servername",
                                   "localhost", "-cert2", certs.server().certFile, "-key2", certs.server().keyFile,
                                   "-www", "-tlsextdebug"},
                                  log);
  REQUIRE(test::waitUntil([&] { return !sServer.running() || accepts(port); }));
  REQUIRE(sServer.running());
  const auto tls = context(certs.caFile());
  // s_server's stdout is a buffered file, flushed between connections: wait for what it logs.
  const auto sniSeen = [&] { return count(readFile(log), "TLS client extension \"server name\""); };
  const std::size_t before = sniSeen();  // the readiness probe sent no ClientHello

  auto stream = openStream("127.0.0.1", port, tls, "localhost", in(10s));
  CHECK(stream->open());
  stream.reset();
  CHECK(test::waitUntil([&] { return sniSeen() == before + 1; }));

  const Error error = openError("127.0.0.1", port, tls, "127.0.0.1");
  CHECK(error.code() == ErrorCode::ConnectFailed);
  CHECK_THAT(error.what(), Catch::Contains("certificate verify failed: IP address mismatch"));

  // Once a later connection's SNI is in the log, the IP literal's connection is in it too.
  openStream("127.0.0.1", port, tls, "localhost", in(10s)).reset();
  CHECK(test::waitUntil([&] { return sniSeen() >= before + 2; }));
  CHECK(sniSeen() == before + 2);  // the IP literal sent no server name at all
}

TEST_CASE("a CA that did not sign the server's certificate: ConnectFailed with the verification error") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  const Error error = openError("127.0.0.1", server.port(), context(certs.otherCaFile()), "127.0.0.1");
  CHECK(error.code() == ErrorCode::ConnectFailed);
  // Redis sends the CA with its certificate (OpenSSL builds the chain from tls-ca-cert-file), so
  // OpenSSL names the untrusted root; a server that sends its certificate alone gets the other text.
  const std::string prefix = "TLS handshake with " + peerOf(server) + " failed: certificate verify failed: ";
  CHECK_THAT(error.what(), Catch::Equals(prefix + "self-signed certificate in certificate chain") ||
                               Catch::Equals(prefix + "unable to get local issuer certificate"));
  CHECK(ERR_peek_error() == 0);  // nothing left in this thread's error queue for the next stream

  // The next stream of this thread is unaffected.
  auto good = openStream(server, context(certs.caFile()));
  CHECK(ping(*good) == "+PONG\r\n");
}

TEST_CASE("no caFile: the system store, which does not hold the test CA") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  const Error error = openError("127.0.0.1", server.port(), context(""), "localhost");
  CHECK(error.code() == ErrorCode::ConnectFailed);
  CHECK_THAT(error.what(), Catch::Contains("TLS handshake with localhost (" + peerOf(server) + ") failed"));
  CHECK_THAT(error.what(), Catch::Contains("certificate verify failed: self-signed certificate in certificate chain") ||
                               Catch::Contains("certificate verify failed: unable to get local issuer certificate"));
}

TEST_CASE("a certificate for another name: ConnectFailed, for an IP literal and for a DNS name") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls(certs.otherName()));
  const auto tls = context(certs.caFile());

  const Error byIp = openError("127.0.0.1", server.port(), tls, "127.0.0.1");
  CHECK(byIp.code() == ErrorCode::ConnectFailed);
  CHECK_THAT(byIp.what(), Catch::Contains("certificate verify failed: IP address mismatch"));

  const Error byName = openError("127.0.0.1", server.port(), tls, "localhost");
  CHECK(byName.code() == ErrorCode::ConnectFailed);
  CHECK_THAT(byName.what(), Catch::Contains("certificate verify failed: hostname mismatch"));

  // The certificate is otherwise good: its own name passes.
  auto stream = openStream(server, tls, "wrong-name.invalid");
  CHECK(ping(*stream) == "+PONG\r\n");
}

TEST_CASE("a TLS stream to a plaintext server: no answer, then ConnectFailed when the server drops it") {
  const auto& certs = test::testCertificates();
  // Redis reads the ClientHello as an inline command and waits for its newline (the NUL bytes
  // before the 0x0a hide it), so it never answers: only a deadline, here the server's idle timeout
  // of 1 s, ends the wait.
  test::RedisServerProcess plaintext({"--timeout", "1"});
  const auto started = Clock::now();
  auto stream = Stream::connect(streamlock::detail::resolve("127.0.0.1", plaintext.port()).front(),
                                context(certs.caFile()), "127.0.0.1");
  const auto deadline = in(10s);
  std::optional<Error> error;
  try {
    while (!stream->advance()) await(*stream, deadline, "the handshake");
  } catch (const Error& e) {
    error = e;
  }
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::ConnectFailed);
  CHECK_THAT(error->what(), Catch::StartsWith("TLS handshake with " + peerOf(plaintext) + " failed: "));
  CHECK_FALSE(stream->open());
  CHECK(test::elapsedSince(started) < 5s);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("a plaintext stream to a TLS server: the connection ends without an answer") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  auto stream = openStream(server, nullptr);
  REQUIRE(stream->open());
  const auto deadline = in(10s);
  writeAll(*stream, kPing, deadline);
  std::string received;
  bool ended = false;
  try {
    for (;;) {
      if (!stream->read(received)) break;  // end of stream
      await(*stream, deadline, "a read");
    }
    ended = true;
  } catch (const Error& error) {
    CHECK(error.code() == ErrorCode::ConnectionLost);  // the reset
    ended = true;
  }
  CHECK(ended);
  CHECK_FALSE(contains(received, "PONG"));
}

TEST_CASE("a server that requires a client certificate: accepted with certFile and keyFile, refused without") {
  const auto& certs = test::testCertificates();

  SECTION("TLS 1.3 (the default): refused on the first read, after the client's side of the handshake") {
    auto server = test::RedisServerProcess::withTls(certs.redisTls(true));
    auto with = openStream(server, context(certs.caFile(), certs.client()));
    CHECK(ping(*with) == "+PONG\r\n");

    // The client finishes its handshake before the server has checked the client's certificate,
    // so the refusal arrives as an alert on the first read.
    auto without = openStream(server, context(certs.caFile()));
    try {
      const std::string answer = ping(*without);
      FAIL("answered without a client certificate: " << answer);
    } catch (const Error& error) {
      CHECK(error.code() == ErrorCode::ConnectionLost);
      CHECK_THAT(error.what(), Catch::Contains("certificate required"));
    } catch (const EndOfStream&) {
      SUCCEED("the server closed the connection");
    }
  }

  SECTION("TLS 1.2: refused during the handshake") {
    auto server = test::RedisServerProcess::withTls(certs.redisTls(true), {"--tls-protocols", "TLSv1.2"});
    auto with = openStream(server, context(certs.caFile(), certs.client()));
    CHECK(ping(*with) == "+PONG\r\n");

    const Error error = openError("127.0.0.1", server.port(), context(certs.caFile()), "127.0.0.1");
    CHECK(error.code() == ErrorCode::ConnectFailed);
    CHECK_THAT(error.what(), Catch::StartsWith("TLS handshake with " + peerOf(server) + " failed: "));
  }

  SECTION("a certificate that is not a client certificate is refused") {
    auto server = test::RedisServerProcess::withTls(certs.redisTls(true), {"--tls-protocols", "TLSv1.2"});
    // otherName is signed by the CA but is not a client certificate (serverAuth only).
    const Error error =
        openError("127.0.0.1", server.port(), context(certs.caFile(), certs.otherName()), "127.0.0.1");
    CHECK(error.code() == ErrorCode::ConnectFailed);
  }
}

TEST_CASE("insecureSkipVerify: connects whatever the CA and the name") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls(certs.otherName()));
  // The wrong CA, no CA (the system store), a name the certificate does not hold.
  for (const auto& ca : {certs.otherCaFile(), std::string()}) {
    auto stream = openStream(server, context(ca, {}, true), "localhost");
    CHECK(ping(*stream) == "+PONG\r\n");
    auto byIp = openStream(server, context(ca, {}, true), "127.0.0.1");
    CHECK(ping(*byIp) == "+PONG\r\n");
  }
  // The same server with verification on is refused.
  CHECK(openError("127.0.0.1", server.port(), context(certs.otherCaFile()), "127.0.0.1").code() ==
        ErrorCode::ConnectFailed);
}

TEST_CASE("unreadable, malformed or mismatched files: InvalidArgument naming the file, never its content") {
  const auto& certs = test::testCertificates();
  const std::string missing = certs.dir() + "/missing-" + test::uniqueId() + ".pem";
  const std::string garbage = certs.dir() + "/garbage-" + test::uniqueId() + ".pem";
  {
    std::ofstream out(garbage);
    out << "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
  }
  const auto refusal = [](const TlsSettings& settings) -> Error {
    try {
      TlsContext::create(settings);
    } catch (const Error& error) {
      return error;
    }
    FAIL("the context was made");
    throw std::logic_error("unreachable");
  };
  const auto check = [&](const TlsSettings& settings, const std::string& file) {
    const Error error = refusal(settings);
    INFO(error.what());
    CHECK(error.code() == ErrorCode::InvalidArgument);
    CHECK(contains(error.what(), file));
    CHECK_FALSE(contains(error.what(), "c2VjcmV0"));
    CHECK(ERR_peek_error() == 0);
  };
  const auto settings = [&](std::string ca, std::string cert, std::string key) {
    TlsSettings out;
    out.caFile = std::move(ca);
    out.certFile = std::move(cert);
    out.keyFile = std::move(key);
    return out;
  };

  check(settings(missing, "", ""), missing);
  check(settings(garbage, "", ""), garbage);
  check(settings(certs.caFile(), missing, certs.client().keyFile), missing);
  check(settings(certs.caFile(), garbage, certs.client().keyFile), garbage);
  check(settings(certs.caFile(), certs.client().certFile, missing), missing);
  check(settings(certs.caFile(), certs.client().certFile, garbage), garbage);
  // A key that belongs to another certificate.
  check(settings(certs.caFile(), certs.client().certFile, certs.server().keyFile), certs.server().keyFile);
  // Half a client identity.
  check(settings(certs.caFile(), certs.client().certFile, ""), certs.client().certFile);
  check(settings(certs.caFile(), "", certs.client().keyFile), certs.client().keyFile);
  // insecureSkipVerify does not hide a bad CA path.
  auto insecure = settings(missing, "", "");
  insecure.insecureSkipVerify = true;
  check(insecure, missing);
}

TEST_CASE("an encrypted key file is refused without asking for a passphrase") {
  const auto& certs = test::testCertificates();
  const std::string encrypted = certs.dir() + "/encrypted-" + test::uniqueId() + ".key";
  const auto made = test::runProcess({"openssl", "pkey", "-in", certs.client().keyFile, "-aes256", "-passout",
                                      "pass:streamlock-test", "-out", encrypted},
                                     30s);
  REQUIRE(made.exitCode == 0);
  TlsSettings settings;
  settings.caFile = certs.caFile();
  settings.certFile = certs.client().certFile;
  settings.keyFile = encrypted;
  try {
    TlsContext::create(settings);
    FAIL("the context was made");
  } catch (const Error& error) {
    CHECK(error.code() == ErrorCode::InvalidArgument);
    CHECK_THAT(error.what(), Catch::Contains(encrypted));
  }
}

TEST_CASE("a 1 MiB command: partial writes retried from a moved buffer, and the value read back") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  auto stream = openStream(server, context(certs.caFile()));

  std::string value(1 << 20, '\0');
  std::uint32_t state = 0x12345678U;
  for (auto& c : value) {
    state = state * 1664525U + 1013904223U;
    c = static_cast<char>('!' + (state >> 24U) % 90U);
  }
  const std::string key = "tls-test:" + test::uniqueId();
  const std::string set = "*3\r\n$3\r\nSET\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n$" +
                          std::to_string(value.size()) + "\r\n" + value + "\r\n";
  const auto deadline = in(30s);
  // A stopped server reads nothing, so its receive window stays small (~150 KiB here), and a small
  // send buffer keeps the kernel from queueing the rest on our side (it would grow to megabytes):
  // the first write is short, and leaves OpenSSL a record half sent.
  const int sendBuffer = 16384;
  REQUIRE(::setsockopt(stream->fd(), SOL_SOCKET, SO_SNDBUF, &sendBuffer, sizeof sendBuffer) == 0);
  server.pause();
  const std::size_t first = stream->write(set.data(), set.size());
  server.resume();
  CHECK(first > 0);
  CHECK(first < set.size());
  CHECK((stream->wants() & Stream::kWrite) != 0);
  // The rest, from another buffer (and again after each short write).
  writeAll(*stream, set.substr(first), deadline);
  CHECK(readAtLeast(*stream, 5, deadline) == "+OK\r\n");

  const std::string get = "*2\r\n$3\r\nGET\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n";
  writeAll(*stream, get, deadline);
  const std::string expected = "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
  const std::string answer = readAtLeast(*stream, expected.size(), deadline);
  CHECK(answer.size() == expected.size());
  CHECK((answer == expected));  // (not decomposed: Catch2 would print both megabytes)
  CHECK(ping(*stream) == "+PONG\r\n");  // nothing left over, in the socket or in OpenSSL
}

TEST_CASE("the server closing after QUIT ends the stream: read() returns false, no error") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  auto stream = openStream(server, context(certs.caFile()));
  const auto deadline = in(10s);
  writeAll(*stream, "*1\r\n$4\r\nQUIT\r\n", deadline);
  std::string in;
  bool more = true;
  while (more) {
    more = stream->read(in);
    if (more) await(*stream, deadline, "the end of the stream");
  }
  CHECK(in == "+OK\r\n");
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("writing to a server that died: ConnectionLost, and no SIGPIPE") {
  // SIGPIPE's default action ends the process: OpenSSL's own socket BIO would raise it here.
  struct sigaction previous {};
  struct sigaction fallback {};
  fallback.sa_handler = SIG_DFL;
  REQUIRE(::sigaction(SIGPIPE, &fallback, &previous) == 0);

  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  auto stream = openStream(server, context(certs.caFile()));
  REQUIRE(ping(*stream) == "+PONG\r\n");
  server.kill();

  const auto deadline = in(10s);
  std::optional<Error> error;
  try {
    for (;;) {  // the first writes may still be taken: the reset comes back with the next ones
      const std::size_t written = stream->write(kPing.data(), kPing.size());
      if (written < kPing.size()) await(*stream, deadline, "a write");
      if (Clock::now() > deadline) throw TimedOut("the writes never failed");
    }
  } catch (const Error& e) {
    error = e;
  }
  ::sigaction(SIGPIPE, &previous, nullptr);
  REQUIRE(error);
  CHECK(error->code() == ErrorCode::ConnectionLost);
  CHECK_THAT(error->what(), Catch::StartsWith("writing to " + peerOf(server) + " (TLS): "));
}

TEST_CASE("closeSilently sends no close_notify, and destroying an open stream sends one") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls());
  const auto tls = context(certs.caFile());

  // A duplicate of the socket keeps the connection open after the stream closes its descriptor,
  // so that only what the stream sent can make the server close it.
  const auto serverClosed = [](int fd, std::chrono::milliseconds within) {
    const auto deadline = in(within);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buffer[512];
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
    }
  };

  auto silent = openStream(server, tls);
  REQUIRE(ping(*silent) == "+PONG\r\n");
  const int silentCopy = ::dup(silent->fd());
  REQUIRE(silentCopy >= 0);
  silent->closeSilently();
  CHECK(silent->fd() == -1);
  CHECK_FALSE(silent->open());
  CHECK_FALSE(serverClosed(silentCopy, 500ms));
  ::close(silentCopy);

  auto polite = openStream(server, tls);
  REQUIRE(ping(*polite) == "+PONG\r\n");
  const int politeCopy = ::dup(polite->fd());
  REQUIRE(politeCopy >= 0);
  polite.reset();
  CHECK(serverClosed(politeCopy, 5s));
  ::close(politeCopy);
}

TEST_CASE("contexts made and used on several threads at once") {
  const auto& certs = test::testCertificates();
  auto server = test::RedisServerProcess::withTls(certs.redisTls(true));
  std::atomic<int> pongs{0};
  std::atomic<int> refusals{0};
  std::mutex mutex;
  std::vector<std::string> unexpected;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      // Odd threads trust the wrong CA: their failures must not leak into the others' error queues.
      const bool good = i % 2 == 0;
      for (int round = 0; round < 3; ++round) {
        try {
          const auto tls = context(good ? certs.caFile() : certs.otherCaFile(), certs.client());
          auto stream = openStream(server, tls);
          if (ping(*stream) == "+PONG\r\n") ++pongs;
        } catch (const Error& error) {
          if (!good && error.code() == ErrorCode::ConnectFailed && contains(error.what(), "certificate verify failed")) {
            ++refusals;
            continue;
          }
          const std::lock_guard<std::mutex> lock(mutex);
          unexpected.emplace_back(error.what());
        } catch (const std::exception& error) {
          const std::lock_guard<std::mutex> lock(mutex);
          unexpected.emplace_back(error.what());
        }
        if (ERR_peek_error() != 0) {
          const std::lock_guard<std::mutex> lock(mutex);
          unexpected.emplace_back("an error left in OpenSSL's queue");
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::string failures;
  for (const auto& what : unexpected) failures += what + "\n";
  INFO(failures);
  CHECK(unexpected.empty());
  CHECK(pongs == 6);
  CHECK(refusals == 6);
}

// --- Host checks, certificates, protocol versions, hostile peers ---------------------------------

namespace {

// An `openssl s_server -www` on a free port serving cert (one connection at a time), waited for.
struct SServer {
  int port = test::closedPort();
  std::unique_ptr<test::BackgroundProcess> process;
  SServer(const test::CertAndKey& cert, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{"openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port), "-cert",
                                  cert.certFile, "-key", cert.keyFile, "-www"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process = std::make_unique<test::BackgroundProcess>(argv);
    REQUIRE(test::waitUntil([&] { return !process->running() || accepts(port); }));
    REQUIRE(process->running());
  }
};

// A loopback listener run by a thread: `serve` gets each accepted socket (blocking) and owns it.
// With accept=false it listens and never accepts: the kernel completes every TCP connect, and
// nothing ever answers.
class RawListener {
 public:
  RawListener(bool accept, std::function<void(int)> serve) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    socklen_t length = sizeof address;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
    REQUIRE(::listen(fd_, 16) == 0);
    if (accept) {
      thread_ = std::thread([this, serve] {
        for (;;) {
          const int client = ::accept(fd_, nullptr, nullptr);
          if (client < 0) return;
          serve(client);
        }
      });
    }
  }
  ~RawListener() {
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

std::string handshakeFailure(int port, const std::shared_ptr<TlsContext>& tls, const std::string& serverName) {
  const Error error = openError("127.0.0.1", port, tls, serverName);
  CHECK(error.code() == ErrorCode::ConnectFailed);
  return error.what();
}

}  // namespace

TEST_CASE("a DNS name is checked against DNS SANs only, never against the CN") {
  test::TlsCertificates certs;  // private: its "localhost" certificate is replaced below
  const auto tls = context(certs.caFile());
  SECTION("CN=localhost and no SAN at all") {
    SServer server(certs.issue("localhost", "", "serverAuth"));
    const std::string what = handshakeFailure(server.port, tls, "localhost");
    CHECK_THAT(what, Catch::Contains("certificate verify failed: hostname mismatch"));
  }
  SECTION("CN=localhost and only an IP SAN") {
    SServer server(certs.issue("localhost", "IP:127.0.0.1", "serverAuth"));
    const std::string what = handshakeFailure(server.port, tls, "localhost");
    CHECK_THAT(what, Catch::Contains("certificate verify failed: hostname mismatch"));
  }
}

TEST_CASE("an IP literal is checked against IP SANs only, never a CN or a DNS SAN spelled as the IP") {
  test::TlsCertificates certs;
  const auto tls = context(certs.caFile());
  SECTION("CN=127.0.0.1, no SAN") {
    SServer server(certs.issue("127.0.0.1", "", "serverAuth"));
    CHECK_THAT(handshakeFailure(server.port, tls, "127.0.0.1"), Catch::Contains("IP address mismatch"));
  }
  SECTION("DNS SAN 127.0.0.1") {
    SServer server(certs.issue("ip-as-dns", "DNS:127.0.0.1", "serverAuth"));
    CHECK_THAT(handshakeFailure(server.port, tls, "127.0.0.1"), Catch::Contains("IP address mismatch"));
  }
}

TEST_CASE("wildcard certificates match one whole left-most label only") {
  test::TlsCertificates certs;
  const auto tls = context(certs.caFile());
  {
    SServer server(certs.issue("wild", "DNS:*.example.test", "serverAuth"));
    CHECK(openStream("127.0.0.1", server.port, tls, "a.example.test", in(10s))->open());
    CHECK_THAT(handshakeFailure(server.port, tls, "example.test"), Catch::Contains("hostname mismatch"));
    CHECK_THAT(handshakeFailure(server.port, tls, "a.b.example.test"), Catch::Contains("hostname mismatch"));
    CHECK_THAT(handshakeFailure(server.port, tls, "127.0.0.1"), Catch::Contains("IP address mismatch"));
  }
  {
    SServer server(certs.issue("partial", "DNS:a*.example.test", "serverAuth"));
    CHECK_THAT(handshakeFailure(server.port, tls, "ab.example.test"), Catch::Contains("hostname mismatch"));
  }
  {
    SServer server(certs.issue("tld", "DNS:*.test", "serverAuth"));
    CHECK_THAT(handshakeFailure(server.port, tls, "example.test"), Catch::Contains("hostname mismatch"));
  }
}

TEST_CASE("an expired certificate is refused with OpenSSL's text") {
  test::TlsCertificates certs;
  const test::CertAndKey expired = certs.issue("expired", "DNS:localhost, IP:127.0.0.1", "serverAuth");
  const std::string stem = certs.dir() + "/expired";
  const auto signedAgain = test::runProcess({"openssl", "x509", "-req", "-in", stem + ".csr", "-CA", certs.caFile(),
                                             "-CAkey", certs.dir() + "/ca.key", "-set_serial", "0x77", "-days", "-1",
                                             "-extfile", stem + ".ext", "-out", expired.certFile},
                                            30s);
  REQUIRE(signedAgain.exitCode == 0);
  SServer server(expired);
  const auto tls = context(certs.caFile());
  CHECK_THAT(handshakeFailure(server.port, tls, "127.0.0.1"), Catch::Contains("certificate verify failed: certificate has expired"));
  CHECK_THAT(handshakeFailure(server.port, tls, "localhost"), Catch::Contains("certificate verify failed: certificate has expired"));
}

TEST_CASE("a TLS 1.1-only server is refused") {
  const auto& certs = test::testCertificates();
  SServer server(certs.server(), {"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"});
  const std::string what = handshakeFailure(server.port, context(certs.caFile()), "127.0.0.1");
  INFO(what);
  CHECK_THAT(what, Catch::StartsWith("TLS handshake with 127.0.0.1:" + std::to_string(server.port) + " failed: "));
}

TEST_CASE("a peer that answers the ClientHello with garbage, or with nothing, or closes") {
  const auto& certs = test::testCertificates();
  const auto tls = context(certs.caFile());
  SECTION("garbage") {
    RawListener peer(true, [](int fd) {
      char buffer[4096];
      (void)::recv(fd, buffer, sizeof buffer, 0);
      const std::string garbage = "-ERR this is not TLS at all\r\nHTTP/1.1 400 Bad Request\r\n\r\n";
      (void)::send(fd, garbage.data(), garbage.size(), MSG_NOSIGNAL);
      std::this_thread::sleep_for(3s);
      ::close(fd);
    });
    const auto started = Clock::now();
    const std::string what = handshakeFailure(peer.port(), tls, "127.0.0.1");
    INFO(what);
    CHECK(test::elapsedSince(started) < 2s);
    CHECK_THAT(what, Catch::StartsWith("TLS handshake with 127.0.0.1:" + std::to_string(peer.port()) + " failed: "));
  }
  SECTION("a record header announcing a huge record, then silence") {
    RawListener peer(true, [](int fd) {
      char buffer[4096];
      (void)::recv(fd, buffer, sizeof buffer, 0);
      const char header[] = {0x16, 0x03, 0x03, 0x3f, 0x00};
      (void)::send(fd, header, sizeof header, MSG_NOSIGNAL);
      std::this_thread::sleep_for(1s);
      ::close(fd);
    });
    const std::string what = handshakeFailure(peer.port(), tls, "127.0.0.1");
    INFO(what);
    CHECK(ERR_peek_error() == 0);
  }
  SECTION("closes at once") {
    RawListener peer(true, [](int fd) { ::close(fd); });
    const std::string what = handshakeFailure(peer.port(), tls, "127.0.0.1");
    CHECK_THAT(what, Catch::Contains("failed: "));
    INFO(what);
    CHECK(ERR_peek_error() == 0);
  }
}
