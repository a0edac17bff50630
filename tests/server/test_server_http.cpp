// The demo server's HTTP layer (examples/mothership_server/http): one event loop serving every
// connection. Requests sent back to back on one connection are answered in order, the routes that
// answer later (the database, Redis) among those that answer at once; the keep-alive limit closes
// a connection after its last answer; and the connection limit closes the longest idle connection
// for a new one, or answers 503 when none is idle. The deadlines, the byte budget and slow clients
// are in test_server_hostile.cpp. Out of descriptors, the loop waits for room instead of spinning.
// A client that half-closes still gets its answers; a connection closed with requests unread, or
// while stopping, loses none of the answers sent (no reset, Connection: close); and header lines
// that httplib would misread are refused.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.h"
#include "raw_http.h"

using namespace servertest;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

const std::string kChats = "/api/mothership/chats";

// A keep-alive GET (no "Connection: close").
std::string keepAliveGet(const std::string& target, const std::string& headers = {}) {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + "\r\n";
}

// Sends one keep-alive request on fd and reads its whole response (by its Content-Length); the
// status, or 0 when the connection closed or `limit` passed first.
int roundTrip(int fd, const std::string& bytes, milliseconds limit = seconds{10}) {
  if (send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) return 0;
  const auto deadline = Clock::now() + limit;
  std::string raw;
  while (Clock::now() < deadline) {
    const auto end = raw.find("\r\n\r\n");
    if (end != std::string::npos) {
      const auto at = raw.find("\r\nContent-Length: ");
      const std::size_t length = at == std::string::npos || at > end ? 0 : std::stoul(raw.substr(at + 18));
      if (raw.size() >= end + 4 + length) return std::stoi(raw.substr(9, 3));
    }
    pollfd entry{fd, POLLIN, 0};
    if (poll(&entry, 1, 50) <= 0) continue;
    char chunk[65536];
    const auto n = recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return 0;
    raw.append(chunk, static_cast<std::size_t>(n));
  }
  return 0;
}

// Whether the last response in answer says "Connection: close".
bool lastResponseSaysClose(const Answer& answer) {
  const auto lastHead = answer.raw.rfind("HTTP/1.1 ");
  return lastHead != std::string::npos && answer.raw.find("Connection: close", lastHead) != std::string::npos;
}

// Whether fd is still open after `wait` (the server neither closed nor reset it meanwhile).
bool stillOpen(int fd, milliseconds wait) { return !closedByServer(fd, Clock::now() + wait); }

// `count` connections to port, each in the middle of a request (never idle).
std::vector<int> busyConnections(int port, int count) {
  std::vector<int> busy;
  for (int i = 0; i < count; ++i) {
    busy.push_back(connectTo(port));
    send(busy.back(), "GET /heal", 9, MSG_NOSIGNAL);
  }
  return busy;
}

// A /healthz on a new connection, retried for up to 3 s until it is refused (503): the server
// sees connections opened just before once its loop has accepted them. The last answer.
Answer refusedHealthz(int port) {
  Answer answer;
  const auto until = Clock::now() + seconds{3};
  while (Clock::now() < until && answer.status != 503) answer = exchange(port, get("/healthz"), seconds{2});
  return answer;
}

}  // namespace

TEST_CASE("http: requests sent back to back on one connection are answered in order, once each", "[server][http]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId, "back to back");
  const auto auth = bearer(caller.token);

  // Answered later (the list, the chat: the database and Redis; /healthz: a blocking thread)
  // and at once (404, /metrics, the page), interleaved, in one write.
  const std::string bytes = keepAliveGet(kChats + "?workspaceId=" + caller.workspaceId, auth) +
                            keepAliveGet("/nowhere") + keepAliveGet("/healthz") +
                            keepAliveGet(kChats + "/" + chatId, auth) + keepAliveGet("/metrics") +
                            keepAliveGet(kChats + "/" + chatId, "Authorization: Bearer nope\r\n") + get("/");
  const auto answer = exchange(server.port(), bytes);
  INFO(answer.raw.substr(0, 2000));
  REQUIRE(answer.statuses == std::vector<int>{200, 404, 200, 200, 200, 401, 200});
  CHECK(answer.closed);  // after the last one, which asked for it
  const auto listed = Json::parse(answer.bodies[0]);
  REQUIRE(listed["data"].size() == 1);
  CHECK(listed["data"][0]["id"] == chatId);
  CHECK(Json::parse(answer.bodies[1])["error"] == "Not found");
  CHECK(Json::parse(answer.bodies[2])["status"] == "ok");
  CHECK(Json::parse(answer.bodies[3])["chat"]["id"] == chatId);
  CHECK(answer.bodies[4].find("mothership_http_requests_total") != std::string::npos);
  CHECK(Json::parse(answer.bodies[5])["error"] == "Unauthorized");
  CHECK(answer.bodies[6].find("<html") != std::string::npos);
}

TEST_CASE("http: a connection closes after its 100th request, answered with Connection: close", "[server][http]") {
  Server server(sharedRedisFlags());
  std::string bytes;
  for (int i = 0; i < 101; ++i) bytes += keepAliveGet("/metrics");
  const auto answer = exchange(server.port(), bytes);
  CHECK(answer.responses == 100);
  CHECK(answer.closed);
  CHECK(lastResponseSaysClose(answer));
}

TEST_CASE("http: past --max-connections the longest idle connection gives way, and with none idle, 503",
          "[server][http]") {
  Server server({"--max-connections", "4", "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});

  // Four idle keep-alive connections, idle since their answers, oldest first.
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    idle.push_back(connectTo(server.port()));
    REQUIRE(roundTrip(idle.back(), keepAliveGet("/metrics")) == 200);
  }
  const auto fifth = exchange(server.port(), get("/healthz"));
  CHECK(fifth.status == 200);
  CHECK(closedByServer(idle[0], Clock::now() + seconds{5}));  // the longest idle one
  for (std::size_t i = 1; i < idle.size(); ++i) {
    INFO("idle connection " << i);
    CHECK(stillOpen(idle[i], milliseconds{200}));
  }
  // A connection that is still open still works.
  CHECK(roundTrip(idle[3], keepAliveGet("/metrics")) == 200);
  for (const int fd : idle) close(fd);

  // Four connections in the middle of a request: none is idle, so the next one is refused (once
  // the four closed above are gone, as the loop notices them).
  const auto busy = busyConnections(server.port(), 4);
  const auto refused = refusedHealthz(server.port());
  INFO(refused.raw);
  CHECK(refused.status == 503);
  CHECK(refused.head.find("Retry-After: 1") != std::string::npos);
  CHECK(Json::parse(refused.body)["error"] == "Service unavailable");
  CHECK(stillOpen(busy[0], milliseconds{100}));  // a busy connection is never the one closed
  for (const int fd : busy) close(fd);

  // Their places free again: served.
  CHECK(eventually([&] { return exchange(server.port(), get("/healthz"), seconds{2}).status == 200; },
                   seconds{10}));
}

TEST_CASE("http: --max-connections is checked, and wins over --threads, given before or after it", "[server][http]") {
  for (const auto* bad : {"0", "-1", "many", "1000001", ""}) {
    INFO("--max-connections '" << bad << "'");
    Subprocess process({serverBinary(), "--max-connections", bad, "--database-url", TestDatabase::get().conninfo()},
                       {{"STREAMLOCK_MAX_CONNECTIONS", std::nullopt}});
    CHECK(process.wait(seconds{30}) == std::optional<int>(2));
    CHECK(process.stderrText().find("--max-connections") != std::string::npos);
  }

  // --threads 64 alone would allow 64 + 256 connections: two busy ones fill a limit of 2.
  for (const auto& flags : std::vector<std::vector<std::string>>{{"--threads", "64", "--max-connections", "2"},
                                                                  {"--max-connections", "2", "--threads", "64"}}) {
    INFO(flags[0] << " " << flags[1] << " " << flags[2] << " " << flags[3]);
    Server server(flags);
    const auto busy = busyConnections(server.port(), 2);
    CHECK(refusedHealthz(server.port()).status == 503);
    for (const int fd : busy) close(fd);
  }
}

namespace {

// user + system CPU seconds of a process so far, from /proc/<pid>/stat.
double cpuSeconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(stat, text);  // one line
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stol(field);
  }
  return static_cast<double>(ticks) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

TEST_CASE("http: out of descriptors, the server waits without spinning and serves again once some close",
          "[server][http]") {
  // 64 descriptors in all (prlimit, util-linux): the busy connections below run the server out of them.
  Subprocess process({"/usr/bin/prlimit", "--nofile=64:64", serverBinary(), "--listen", "127.0.0.1:0", "--database-url",
                      TestDatabase::get().conninfo()},
                     {{"STREAMLOCK_MAX_CONNECTIONS", std::nullopt}, {"STREAMLOCK_THREADS", std::nullopt}});
  std::optional<std::string> line;
  while ((line = process.readLine(seconds{30})) && line->rfind("listening on http://127.0.0.1:", 0) != 0) {
  }
  REQUIRE(line);
  const int port = std::stoi(line->substr(line->rfind(':') + 1));

  // Connections in the middle of a request: none can be closed for room, so accept must wait.
  const auto busy = busyConnections(port, 80);  // the kernel completes them from the backlog
  std::this_thread::sleep_for(milliseconds{300});  // the server accepts what it can meanwhile
  const double before = cpuSeconds(process.pid());
  std::this_thread::sleep_for(seconds{1});
  const double spent = cpuSeconds(process.pid()) - before;
  INFO("server CPU over 1 s out of descriptors: " << spent << " s");
  CHECK(spent < 0.3);  // a spinning loop would take the whole second
  CHECK(process.running());

  for (const int fd : busy) close(fd);
  CHECK(eventually([&] { return exchange(port, get("/healthz"), seconds{2}).status == 200; }, seconds{15}));
  process.signal(SIGTERM);
  CHECK(process.wait(seconds{15}) == std::optional<int>(0));
}

namespace {

// Nanoseconds a thread has run so far (/proc/<pid>/task/<tid>/schedstat, first field).
std::uint64_t threadRunNanoseconds(pid_t pid, pid_t tid) {
  std::ifstream schedstat("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/schedstat");
  std::uint64_t ns = 0;
  schedstat >> ns;
  return ns;
}

}  // namespace

TEST_CASE("http: an idle server's loop sleeps between its sweeps instead of polling", "[server][http]") {
  Server server(sharedRedisFlags());
  REQUIRE(server.get("/healthz").status == 200);  // up, and the connection closed after it
  const pid_t pid = server.process().pid();
  // The HTTP loop is the main thread. It wakes every 100 ms to sweep idle connections; the time
  // to the next sweep was rounded down, so that it polled epoll without waiting through the last
  // millisecond of each period: thousands of calls a second, ~8 ms of CPU per second, idle.
  const std::uint64_t before = threadRunNanoseconds(pid, pid);
  std::this_thread::sleep_for(seconds{3});
  const std::uint64_t ran = threadRunNanoseconds(pid, pid) - before;
  INFO("HTTP loop CPU over 3 s idle: " << ran / 1000 << " us");
  CHECK(ran > 0);  // the file was read
  CHECK(ran < 10'000'000);  // about 2.5 ms when it sleeps; about 25 ms when it polled
}

TEST_CASE("http: /healthz with its check threads all taken answers at once, in its usual form", "[server][http]") {
  const std::string tag = "healthz_flood_" + std::to_string(::getpid());
  Server server(sharedRedisFlags(), TestDatabase::get().conninfo() + " application_name=" + tag);
  REQUIRE(server.get("/healthz").status == 200);  // the pool's connection is open

  // The server's PostgreSQL backends stopped: the checks under way wait out their second, and the
  // threads that run them (4, with 64 more waiting) are all taken by the burst below.
  std::vector<pid_t> stopped;
  for (const auto& row : TestDatabase::get().sql().rows("SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                                        {tag})) {
    stopped.push_back(static_cast<pid_t>(std::stol(*row[0])));
  }
  REQUIRE(!stopped.empty());
  struct Resume {
    const std::vector<pid_t>& pids;
    ~Resume() {
      for (const pid_t pid : pids) kill(pid, SIGCONT);
    }
  } resume{stopped};
  for (const pid_t pid : stopped) REQUIRE(kill(pid, SIGSTOP) == 0);

  constexpr int kBurst = 100;
  std::vector<Answer> answers(kBurst);
  std::vector<milliseconds> took(kBurst);
  {
    std::vector<std::thread> burst;
    for (int i = 0; i < kBurst; ++i) {
      burst.emplace_back([&, i] {
        const auto start = Clock::now();
        answers[static_cast<std::size_t>(i)] = exchange(server.port(), get("/healthz"), seconds{20});
        took[static_cast<std::size_t>(i)] = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
      });
    }
    for (auto& thread : burst) thread.join();
  }

  int unchecked = 0;
  for (int i = 0; i < kBurst; ++i) {
    const auto& answer = answers[static_cast<std::size_t>(i)];
    INFO("answer " << i << " after " << took[static_cast<std::size_t>(i)].count() << " ms: " << answer.raw);
    REQUIRE((answer.status == 200 || answer.status == 503));
    const auto body = Json::parse(answer.body);
    CHECK(body.size() == 4);
    for (const auto* field : {"status", "postgres", "redis", "breaker"}) CHECK(body.contains(field));
    if (answer.status == 503 && body["redis"] == "unknown" && took[static_cast<std::size_t>(i)] < milliseconds{900}) {
      CHECK(body["status"] == "unavailable");
      CHECK(body["postgres"] == "down");
      CHECK(answer.head.find("Retry-After: 1") != std::string::npos);
      ++unchecked;
    }
  }
  // 100 at once against 4 running and 64 waiting: the rest answered without waiting for a check.
  CHECK(unchecked >= 10);
}

TEST_CASE("http: a client that half-closes after its requests still gets every answer", "[server][http]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId, "half-closed");

  // As `printf 'GET ...' | nc -N` does: the request, then end of input, then read the answer.
  SECTION("one HTTP/1.0 request answered later (/healthz)") {
    const int fd = connectTo(server.port());
    const std::string bytes = "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    REQUIRE(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
    REQUIRE(shutdown(fd, SHUT_WR) == 0);
    const auto answer = readUntilClosed(fd);
    close(fd);
    INFO(answer.raw);
    CHECK(answer.statuses == std::vector<int>{200});
    CHECK(answer.closed);
    CHECK_FALSE(answer.reset);
  }
  SECTION("keep-alive requests back to back, answered later and at once") {
    const int fd = connectTo(server.port());
    const auto auth = bearer(caller.token);
    const std::string bytes = keepAliveGet(kChats + "/" + chatId, auth) + keepAliveGet("/nowhere") +
                              keepAliveGet(kChats + "?workspaceId=" + caller.workspaceId, auth) + "GET /metr";
    REQUIRE(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
    REQUIRE(shutdown(fd, SHUT_WR) == 0);
    const auto answer = readUntilClosed(fd);
    close(fd);
    INFO(answer.raw.substr(0, 2000));
    // The three whole requests, in order; the unfinished fourth is dropped with the connection.
    REQUIRE(answer.statuses == std::vector<int>{200, 404, 200});
    CHECK(Json::parse(answer.bodies[0])["chat"]["id"] == chatId);
    CHECK(Json::parse(answer.bodies[2])["data"][0]["id"] == chatId);
    CHECK(answer.closed);
    CHECK_FALSE(answer.reset);
  }
}

TEST_CASE("http: a response answered later says what the request asked for: HEAD, gzip, Connection, HTTP/1.0, a body",
          "[server][http]") {
  // The routes that answer later have httplib write their response in a second run of the
  // request (http_server.h): whatever of the request shapes the response must reach that run.
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId, "answered later");
  const auto auth = bearer(caller.token);
  const auto target = kChats + "/" + chatId;
  const auto plain = exchange(server.port(), get(target, auth));
  REQUIRE(plain.status == 200);
  const auto contentLength = "Content-Length: " + std::to_string(plain.body.size()) + "\r\n";

  SECTION("HEAD: the GET's headers, no body") {
    const auto answer = exchange(server.port(), request("HEAD", target, auth));
    INFO(answer.raw);
    CHECK(answer.status == 200);
    CHECK(answer.head.find(contentLength) != std::string::npos);
    CHECK(answer.raw.size() == answer.raw.find("\r\n\r\n") + 4);  // nothing after the head
  }
  SECTION("Accept-Encoding: gzip, in any case of its name: a gzip body") {
    const auto answer = exchange(server.port(), get(target, auth + "accept-ENCODING: gzip\r\n"));
    INFO(answer.head);
    CHECK(answer.status == 200);
    CHECK(answer.head.find("Content-Encoding: gzip") != std::string::npos);
    CHECK(answer.body.compare(0, 2, "\x1f\x8b") == 0);
  }
  SECTION("Connection: close: said back, and the connection closes") {
    const auto answer = exchange(server.port(), get(target, auth));
    CHECK(answer.head.find("Connection: close") != std::string::npos);
    CHECK(answer.closed);
  }
  SECTION("HTTP/1.0 with Connection: Keep-Alive stays open; without it, closes") {
    const int fd = connectTo(server.port());
    const std::string keepAlive = "GET " + target + " HTTP/1.0\r\nConnection: Keep-Alive\r\n" + auth + "\r\n";
    CHECK(roundTrip(fd, keepAlive) == 200);
    CHECK(roundTrip(fd, keepAlive) == 200);
    close(fd);
    const auto answer = exchange(server.port(), "GET " + target + " HTTP/1.0\r\n" + auth + "\r\n");
    CHECK(answer.status == 200);
    CHECK(answer.closed);
  }
  SECTION("a request with a body: answered, then Connection: close") {
    const int fd = connectTo(server.port());
    const std::string bytes = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n" + auth + "\r\nabc";
    REQUIRE(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
    const auto answer = readUntilClosed(fd);
    close(fd);
    INFO(answer.raw);
    CHECK(answer.statuses == std::vector<int>{200});
    CHECK(lastResponseSaysClose(answer));
    CHECK(answer.closed);
  }
  SECTION("Expect: 100-continue: the interim response, then the answer") {
    const auto answer = exchange(server.port(), get(target, auth + "Expect: 100-continue\r\nContent-Length: 0\r\n"));
    INFO(answer.raw);
    CHECK(answer.raw.compare(0, 25, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    CHECK(answer.statuses == std::vector<int>{200});
  }
}

TEST_CASE("http: closing with requests still unread, the answers sent reach a client that reads late",
          "[server][http]") {
  Server server(sharedRedisFlags());
  // 300 requests of 171 bytes in one write (51 KB), more than the server reads by its 100th
  // request (16 KiB at a time): it answers 100 and closes while the rest is unread. A plain close()
  // would then reset the connection, and the reset destroys the answers not read yet.
  std::string bytes;
  for (int i = 0; i < 300; ++i) bytes += keepAliveGet("/nowhere", "X-Pad: " + std::string(120, 'p') + "\r\n");
  const int fd = connectTo(server.port());
  REQUIRE(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  // Read only once the server is done with the connection: it sent its end (FIN) or a reset.
  const bool serverDone = eventually([&] {
    tcp_info info{};
    socklen_t length = sizeof info;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) == 0 && info.tcpi_state != TCP_ESTABLISHED;
  }, seconds{10});
  const auto answer = readUntilClosed(fd);
  close(fd);
  REQUIRE(serverDone);
  CHECK(answer.responses == 100);
  CHECK(answer.closed);
  CHECK_FALSE(answer.reset);
  CHECK(lastResponseSaysClose(answer));
}

TEST_CASE("http: SIGTERM while a keep-alive request is answered: its response says Connection: close",
          "[server][http]") {
  Server server(sharedRedisFlags());
  auto& database = TestDatabase::get();
  Seed seed(database.sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId, "stopping");
  REQUIRE(server.get(kChats + "/" + chatId, caller.token).status == 200);

  Sql locker(database.conninfo());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
  const int fd = connectTo(server.port());
  // The chat (held up by the lock), and /metrics pipelined after it: not answered once stopping.
  const std::string bytes = keepAliveGet(kChats + "/" + chatId, bearer(caller.token)) + keepAliveGet("/metrics");
  REQUIRE(send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  const bool waiting = eventually([&] { return waitingOnLocks(database.sql()) >= 1; });
  server.process().signal(SIGTERM);
  const bool stopping = eventually(
      [&] { return server.process().stderrText().find("SIGTERM received") != std::string::npos; });
  locker.exec("ROLLBACK");
  const auto answer = readUntilClosed(fd);
  close(fd);
  const auto exitCode = server.process().wait(seconds{30});

  REQUIRE(waiting);
  REQUIRE(stopping);
  INFO(answer.raw);
  REQUIRE(answer.statuses == std::vector<int>{200});
  CHECK(answer.head.find("\r\nConnection: close") != std::string::npos);
  CHECK(answer.head.find("Keep-Alive") == std::string::npos);
  CHECK(answer.closed);
  CHECK_FALSE(answer.reset);
  CHECK(exitCode == std::optional<int>(0));
}

TEST_CASE("http: a header line httplib would misread is refused with 400, and its body never runs as a request",
          "[server][http]") {
  Server server(sharedRedisFlags());
  const std::string smuggled = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";  // 36 bytes
  const std::string length = std::to_string(smuggled.size());
  for (const auto& line : {"Content-Length : " + length + "\r\n",      // whitespace before the colon
                           "Content-Length\t: " + length + "\r\n",
                           "Content-Length: " + length + "\n",         // a bare LF: httplib skips the line
                           "X-Folded: a\r\n Content-Length: " + length + "\r\n",  // obs-fold
                           "Content-Length" + std::string("\r\n"),     // no colon
                           ": " + length + "\r\n"}) {                  // no name
    INFO(line);
    const auto answer = exchange(server.port(), "GET /nowhere HTTP/1.1\r\nHost: x\r\n" + line + "\r\n" + smuggled);
    INFO(answer.raw);
    CHECK(answer.statuses == std::vector<int>{400});
    CHECK(Json::parse(answer.body).contains("error"));
    CHECK(answer.closed);
  }
  // Every token character is allowed in a field name.
  const auto fine = exchange(server.port(), get("/nowhere", "X-A1!#$%&'*+-.^_`|~z: 1\r\n"));
  CHECK(fine.statuses == std::vector<int>{404});
}
