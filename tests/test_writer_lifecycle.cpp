// Issue 9, "writer lifecycle": what must never happen to a writer's lock. An acquire that gives up
// leaves no lock behind; ownership loss is reported before the lock can have expired, by a timer;
// callbacks may shut down, release or destroy the Client; a forked child never touches the
// parent's locks or connections; options are validated and deadlines saturate; documented bounds
// hold while a server hangs; a slow callback never delays the heartbeats of other locks.
//
// Every test case is named after the case or rule of the issue it pins. Every wait is bounded,
// and a Watchdog ends the process with a message should the library hang where the test cannot
// bound the wait itself (a destructor, a blocking call): a broken library fails a test, it never
// blocks ctest. [case 7] (results that must not be dropped are [[nodiscard]]) is a compile test:
// tests/nodiscard/.

// Failures print optionals and durations by value (the templates live in the header; Catch2's
// implementation unit always has the rest).
#define CATCH_CONFIG_ENABLE_ALL_STRINGMAKERS
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "acquired.h"
#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "net_faults.h"
#include "watchdog.h"
#include "redis_client.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "streamlock/error.h"

extern char** environ;

using streamlock::Client;
using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::LookupStatus;
using streamlock::MarkerState;
using streamlock::Milliseconds;
using streamlock::Options;
using streamlock::ReleaseOutcome;
using streamlock::Seconds;
using streamlock::StreamLock;
using Clock = std::chrono::steady_clock;
using Value = std::optional<std::string>;
using namespace std::chrono_literals;
namespace test = streamlock::test;
using streamlock::test::threadsWithoutClient;
using streamlock::test::Acquired;
using streamlock::test::acquire;
using streamlock::test::Watchdog;

namespace {

// A one-shot event with the time it happened.
class Event {
 public:
  void set() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (at_) return;
      at_ = Clock::now();
    }
    changed_.notify_all();
  }
  bool waitFor(Milliseconds limit) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, limit, [this] { return at_.has_value(); });
  }
  bool isSet() const { return at().has_value(); }
  std::optional<Clock::time_point> at() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return at_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<Clock::time_point> at_;
};

using Calls = std::vector<std::pair<std::string, std::string>>;

// Records the ownership-loss callbacks (and when the first came) in a state the callback shares:
// a late or repeated call never touches a test frame that is gone.
class LossRecorder {
 public:
  streamlock::OwnershipLostCallback callback(std::function<void()> alsoDo = {}) {
    return [state = state_, alsoDo = std::move(alsoDo)](const std::string& chat, const std::string& stream) {
      {
        const std::lock_guard<std::mutex> lock(state->mutex);
        state->calls.emplace_back(chat, stream);
        if (!state->firstAt) state->firstAt = Clock::now();
      }
      if (alsoDo) alsoDo();
    };
  }
  Calls calls() const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->calls;
  }
  std::size_t count() const { return calls().size(); }
  std::optional<Clock::time_point> firstAt() const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->firstAt;
  }

 private:
  struct State {
    std::mutex mutex;
    Calls calls;
    std::optional<Clock::time_point> firstAt;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};


std::chrono::milliseconds since(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(end - start);
}

// Bytes that reached the server on 127.0.0.1:port and wait unread in its sockets
// (/proc/net/tcp rx_queue of the established connections whose local end is that port): what a
// paused (SIGSTOPped) server has been sent and not read.
long long bytesWaitingAtServer(int port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  long long bytes = 0;
  while (std::getline(table, line)) {
    // "  0: 0100007F:9C40 0100007F:18EB 01 00000000:00000020 ..." : sl, local, remote, state, tx:rx
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues;
    fields >> slot >> local >> remote >> state >> queues;
    const auto colon = local.find(':');
    const auto split = queues.find(':');
    if (colon == std::string::npos || split == std::string::npos || state != "01") continue;
    if (std::stoi(local.substr(colon + 1), nullptr, 16) != port) continue;
    bytes += std::stoll(queues.substr(split + 1), nullptr, 16);
  }
  return bytes;
}

// The backend pid of the connection that the Client's PostgreSQL pool hands out.
int backendPid(Client& client) {
  streamlock::PgPool* pool = client.postgres();
  if (pool == nullptr) throw std::runtime_error("the Client has no PostgreSQL pool");
  const auto result = pool->execute("SELECT pg_backend_pid()");
  return std::stoi(std::string(result.value(0, 0)));
}

// How a child process ended: exited with a status, killed by a signal, or still running at the
// bound (then killed here).
struct ChildEnd {
  bool hung = false;
  bool exited = false;
  int exitStatus = -1;
  int signal = 0;
  std::chrono::milliseconds after{0};
  std::string describe() const {
    if (hung) return "still running after " + std::to_string(after.count()) + " ms (killed)";
    if (exited) return "exited " + std::to_string(exitStatus) + " after " + std::to_string(after.count()) + " ms";
    return "killed by signal " + std::to_string(signal) + " after " + std::to_string(after.count()) + " ms";
  }
};

ChildEnd awaitChild(pid_t pid, Clock::time_point start, std::chrono::milliseconds bound) {
  ChildEnd end;
  int status = 0;
  const bool ended = test::waitUntil([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, bound, 2ms);
  end.after = test::elapsedSince(start);
  if (!ended) {
    end.hung = true;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return end;
  }
  if (WIFEXITED(status)) {
    end.exited = true;
    end.exitStatus = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    end.signal = WTERMSIG(status);
  }
  return end;
}

// A process driven line by line: commands on its stdin, answers on its stdout (one Unix socket,
// so that writing to a dead process fails instead of raising SIGPIPE). Its stderr is the test's.
// Killed and reaped on destruction if still running.
class LineProcess {
 public:
  LineProcess(const std::vector<std::string>& argv, const std::vector<std::string>& environment) {
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) throw std::runtime_error("socketpair failed");
    std::vector<std::string> args = argv;
    std::vector<char*> argp;
    for (auto& arg : args) argp.push_back(arg.data());
    argp.push_back(nullptr);
    std::vector<std::string> env = environment;
    std::vector<char*> envp;
    for (auto& variable : env) envp.push_back(variable.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, ends[1], 0);
    posix_spawn_file_actions_adddup2(&actions, ends[1], 1);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    const int error = ::posix_spawn(&pid_, argp[0], &actions, nullptr, argp.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(ends[1]);
    if (error != 0) {
      ::close(ends[0]);
      throw std::runtime_error("cannot start " + argv.front());
    }
    fd_ = ends[0];
  }
  ~LineProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(fd_);
  }
  LineProcess(const LineProcess&) = delete;
  LineProcess& operator=(const LineProcess&) = delete;

  bool send(const std::string& line) {
    const std::string bytes = line + "\n";
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }

  // The next line, or nullopt at end of file or when none came within limit.
  std::optional<std::string> readLine(std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      if (const auto newline = buffer_.find('\n'); newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd readable{fd_, POLLIN, 0};
      if (::poll(&readable, 1, static_cast<int>(left)) <= 0) continue;
      char chunk[512];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // How it ended, waiting up to limit (killed if still running then).
  ChildEnd wait(std::chrono::milliseconds limit) {
    const ChildEnd end = awaitChild(pid_, Clock::now(), limit);
    pid_ = -1;
    return end;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_;
};

// Heartbeats every 100 ms on a 2 s lock: a deleted key is noticed at once.
Options quickLoss(Options options) {
  options.lock.ttl = 2s;
  options.lock.heartbeatInterval = 100ms;
  return options;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// [case 1] An acquire that gives up after its SET may have reached Redis must not leave that SET
// to take the lock later: the library compare-and-deletes its own value, behind the SET on the
// same connection, within 2 s of Redis answering again.

TEST_CASE("[case 1] an acquire that times out leaves no lock of its stream behind") {
  const Watchdog watchdog("[case 1]", 60s);
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.redis.commandTimeout = 300ms;
  Client client(options);
  const auto key = test::lockKey(options, "c1");
  // A connection is open: the SET goes out at once and waits, unread, in the paused server.
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"c1"}).status == LookupStatus::Verified; }));

  server.pause();
  const auto start = Clock::now();
  const Acquired first = acquire(client, "c1", "s1");
  const auto gaveUpAfter = test::elapsedSince(start);
  server.resume();
  const auto resumedAt = Clock::now();

  INFO("the acquire against the paused Redis gave " << first.describe() << " after " << gaveUpAfter.count() << " ms");
  CHECK(first.error.has_value());  // failed: not "busy" (nullopt), and not a lock
  CHECK(gaveUpAfter >= 250ms);     // commandTimeout (300 ms), give or take a clock tick
  CHECK(gaveUpAfter < 2s);

  // Another stream may take the chat within 2 s of Redis answering again. (Until it could, the
  // chat was held by s1: a silent orphan lock for a whole TTL, 60 s here.)
  std::optional<StreamLock> second;
  const bool taken = test::waitUntil(
      [&] {
        second = acquire(client, "c1", "s2").lock;
        return second.has_value();
      },
      10s, 20ms);
  const auto takenAfter = test::elapsedSince(resumedAt);
  INFO("s2 took the chat " << takenAfter.count() << " ms after Redis was resumed; the key holds "
                           << redis.get(key).value_or("(nothing)"));
  REQUIRE(taken);
  CHECK(takenAfter <= 2500ms);  // 2 s, plus scheduling on a busy machine
  CHECK(redis.get(key) == Value("s2"));
  // The cleanup deletes only s1's value: s2's lock outlives the 2 s window (waiting for the
  // window to pass is waiting for time itself).
  std::this_thread::sleep_until(resumedAt + 2500ms);
  CHECK(redis.get(key) == Value("s2"));
  CHECK(client.pendingStreams().owner("c1") == Value("s2"));
}

// ---------------------------------------------------------------------------------------------
// [case 2] Callbacks may call anything: shutdown(), release(), or destroying the Client, with the
// objects then destroyed by the test, or at the same moment on another thread. Nothing may touch
// freed memory (the suite runs under ASan + UBSan in CI), deadlock or join itself. Each case ends
// once every thread of the library has ended, so that whatever the library still does after a
// callback returns happens while this process (and ASan) is there to see it.

TEST_CASE("[case 2] an ownership-lost callback that shuts the Client down, then the Heartbeat, the StreamLock and "
          "the Client are destroyed") {
  const Watchdog watchdog("[case 2] shutdown from the callback", 60s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  const auto options = quickLoss(test::clientOptions(test::redisUrl(), log));
  const auto threadsBefore = threadsWithoutClient();
  auto client = std::make_unique<Client>(options);
  Client* const shared = client.get();

  auto lock = client->acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  auto shutDown = std::make_shared<Event>();
  auto returned = std::make_shared<Event>();
  LossRecorder lost;
  std::optional<streamlock::Heartbeat> heartbeat = lock->startHeartbeat(lost.callback([shared, shutDown, returned] {
    shared->shutdown();
    shutDown->set();
    // Still inside the callback when the test destroys everything below: whatever the library
    // does once the callback returns must not use the Client, its lock or their state.
    std::this_thread::sleep_for(200ms);
    returned->set();
  }));
  redis.del(test::lockKey(options, "chat-1"));
  REQUIRE(shutDown->waitFor(10s));

  heartbeat.reset();
  lock.reset();
  client.reset();
  CHECK(returned->waitFor(10s));
  CHECK(test::waitUntil([&] { return test::threadCount() <= threadsBefore; }, 10s));
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
}

TEST_CASE("[case 2] an ownership-lost callback that releases its lock, then the Heartbeat, the StreamLock and the "
          "Client are destroyed") {
  const Watchdog watchdog("[case 2] release from the callback", 60s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  const auto options = quickLoss(test::clientOptions(test::redisUrl(), log));
  const auto threadsBefore = threadsWithoutClient();
  auto client = std::make_unique<Client>(options);

  auto lock = client->acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  auto returned = std::make_shared<Event>();
  std::optional<ReleaseOutcome> released;  // written by the callback before `returned`
  LossRecorder lost;
  std::optional<streamlock::Heartbeat> heartbeat = lock->startHeartbeat(lost.callback([&lock, &released, returned] {
    released = lock->release();
    returned->set();
  }));
  redis.del(test::lockKey(options, "chat-1"));
  REQUIRE(returned->waitFor(10s));

  heartbeat.reset();
  lock.reset();
  client.reset();
  CHECK(released == ReleaseOutcome::NotOwner);  // the key was deleted: nothing of ours to delete
  CHECK(test::waitUntil([&] { return test::threadCount() <= threadsBefore; }, 10s));
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
}

TEST_CASE("[case 2] an ownership-lost callback that destroys the Client") {
  const Watchdog watchdog("[case 2] Client destroyed in the callback", 60s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  const auto options = quickLoss(test::clientOptions(test::redisUrl(), log));
  const auto threadsBefore = threadsWithoutClient();
  auto client = std::make_unique<Client>(options);

  auto lock = client->acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  auto returned = std::make_shared<Event>();
  std::function<void()> teardown;
  SECTION("the Client only") {
    teardown = [&client] { client.reset(); };
  }
  SECTION("the StreamLock, then the Client: the last references, gone inside the callback") {
    teardown = [&client, &lock] {
      lock.reset();
      client.reset();
    };
  }
  LossRecorder lost;
  std::optional<streamlock::Heartbeat> heartbeat = lock->startHeartbeat(lost.callback([teardown, returned] {
    teardown();
    returned->set();
  }));
  redis.del(test::lockKey(options, "chat-1"));
  REQUIRE(returned->waitFor(10s));

  CHECK(client == nullptr);
  heartbeat.reset();
  lock.reset();
  CHECK(test::waitUntil([&] { return test::threadCount() <= threadsBefore; }, 10s));
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
}

TEST_CASE("[case 2] an ownership-lost callback shuts the Client down while another thread destroys it") {
  // The callback and the other thread start at the same moment. The Client is in a shared_ptr
  // that only the other thread owns; the callback holds it (weak_ptr::lock) for its shutdown(),
  // so that the test itself never calls a destroyed Client. Whichever lets go last destroys the
  // Client: the other thread while the callback runs, or the callback's thread inside the
  // callback. Several rounds, so that both orders happen.
  const Watchdog watchdog("[case 2] Client destroyed while the callback shuts it down", 90s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  const auto options = quickLoss(test::clientOptions(test::redisUrl(), log));
  const auto threadsBefore = threadsWithoutClient();

  for (int round = 0; round < 6; ++round) {
    INFO("round " << round);
    auto owner = std::make_shared<Client>(options);
    const std::weak_ptr<Client> weak = owner;
    auto lock = owner->acquireStreamLock("chat-1", "stream-" + std::to_string(round));
    REQUIRE(lock);
    auto entered = std::make_shared<Event>();
    auto go = std::make_shared<Event>();
    auto returned = std::make_shared<Event>();
    LossRecorder lost;
    std::optional<streamlock::Heartbeat> heartbeat = lock->startHeartbeat(lost.callback([weak, entered, go, returned] {
      entered->set();
      go->waitFor(10s);
      if (auto client = weak.lock()) client->shutdown();
      returned->set();
    }));
    std::thread destroyer([&owner, entered, go] {
      entered->waitFor(10s);
      go->set();
      owner.reset();
    });
    redis.del(test::lockKey(options, "chat-1"));
    const bool ran = returned->waitFor(10s);
    destroyer.join();
    heartbeat.reset();
    lock.reset();
    REQUIRE(ran);
    CHECK(weak.expired());
    CHECK(lost.count() == 1);
  }
  CHECK(test::waitUntil([&] { return test::threadCount() <= threadsBefore; }, 10s));
}

// ---------------------------------------------------------------------------------------------
// [case 3] fork(): a child never touches its parent's locks. Destroying the parent's Client in a
// child sends nothing to Redis or PostgreSQL and joins no thread. The parent's heartbeat runs
// every 5 s (TTL 60 s): between acquiring and the child's end the parent itself sends nothing, so
// Redis' command and connection totals before and after the child are the child's doing.

TEST_CASE("[case 3] a forked child that destroys its parent's Client leaves the parent's lock, heartbeat and "
          "connections alone") {
  const Watchdog watchdog("[case 3] child destroys the Client", 90s);
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.postgres.conninfo = test::databaseUrl();
  options.postgres.poolSize = 1;  // one pooled connection: the same backend answers before and after
  options.lock.heartbeatInterval = 5s;
  auto client = std::make_unique<Client>(options);
  const auto key = test::lockKey(options, "chat-1");
  const int pgPidBefore = backendPid(*client);

  const auto acquiredAt = Clock::now();
  auto lock = client->acquireStreamLock("chat-1", "stream-parent");
  REQUIRE(lock);
  LossRecorder lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  const auto callsBefore = redis.callsExceptInfo();
  const auto connectionsBefore = redis.infoField("stats", "total_connections_received");

  std::fflush(nullptr);  // nothing buffered for the child to write a second time
  const auto forkedAt = Clock::now();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // The child: the parent's Client is destroyed here, then the child leaves without running
    // anything of the test framework's.
    client.reset();
    ::_exit(0);
  }
  const ChildEnd child = awaitChild(pid, forkedAt, 10s);
  const auto callsAfter = redis.callsExceptInfo();
  const auto connectionsAfter = redis.infoField("stats", "total_connections_received");
  const auto windowEnd = Clock::now();

  INFO("the child " << child.describe());
  CHECK(child.exited);
  CHECK(child.exitStatus == 0);
  CHECK(child.after < 2s);
  // Anything the parent sent between the two readings would be counted as the child's.
  REQUIRE(since(acquiredAt, windowEnd) < 4s);
  CHECK(callsAfter == callsBefore);
  CHECK(connectionsAfter == connectionsBefore);
  CHECK(redis.get(key) == Value("stream-parent"));
  CHECK(backendPid(*client) == pgPidBefore);  // libpq's PQfinish would have ended this session

  // The parent's heartbeat goes on: its next extend (5 s after acquiring) finds the lock its own.
  const bool extended = test::waitUntil(
      [&] { return client->counters().heartbeatsExtended >= 1 || heartbeat.ownershipLost(); }, 15s);
  CHECK(extended);
  CHECK(client->counters().heartbeatsExtended >= 1);
  CHECK(redis.get(key) == Value("stream-parent"));
  CHECK(redis.pttl(key) > 55000);
  CHECK(heartbeat.running());
  CHECK_FALSE(heartbeat.ownershipLost());
  CHECK(lost.count() == 0);
}

TEST_CASE("[case 3] a forked child that calls exit() with a Client of static storage duration leaves the parent's "
          "lock, heartbeat and connections alone") {
  // exit() in a child (e.g. after a failed execvp) runs the static destructors, the parent's
  // Client's among them. The parent here is a separate small program, writer_lifecycle_fork_exit,
  // with a global Client: in this test process exit() in a child would also run the test
  // framework's static destructors and at-exit reporting, which have nothing to do with the
  // library and would write a second report into this one's output. The program runs the fork
  // on the test's word, so that the test reads Redis' totals right before and after the child.
  const Watchdog watchdog("[case 3] child exits with a static Client", 90s);
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  const auto prefix = test::uniquePrefix();
  const auto key = prefix + "chat-1";

  // LeakSanitizer would run at the child's exit(): what the parent's threads own is not freed in
  // the child, and that is no fault of the library's. Leaks are other tests' business.
  std::vector<std::string> environment;
  std::string asanOptions = "ASAN_OPTIONS=detect_leaks=0";
  for (char** variable = environ; *variable != nullptr; ++variable) {
    const std::string entry = *variable;
    if (entry.rfind("ASAN_OPTIONS=", 0) == 0) {
      asanOptions = entry + ":detect_leaks=0";
    } else {
      environment.push_back(entry);
    }
  }
  environment.push_back(asanOptions);
  LineProcess parent({WRITER_LIFECYCLE_FORK_EXIT, server.url(), test::databaseUrl(), prefix, "chat-1",
                      "stream-parent", "5000"},
                     environment);

  const auto ready = parent.readLine(30s);  // "ready <backend pid>"
  REQUIRE(ready);
  const auto readyAt = Clock::now();
  REQUIRE(ready->rfind("ready ", 0) == 0);
  const std::string pgPidBefore = ready->substr(6);
  REQUIRE(redis.get(key) == Value("stream-parent"));
  const auto callsBefore = redis.callsExceptInfo();
  const auto connectionsBefore = redis.infoField("stats", "total_connections_received");

  REQUIRE(parent.send("fork"));
  const auto child = parent.readLine(30s);  // "child exited|signalled|hung <status|signal|-1> ms <elapsed>"
  const auto callsAfter = redis.callsExceptInfo();
  const auto connectionsAfter = redis.infoField("stats", "total_connections_received");
  const auto windowEnd = Clock::now();

  REQUIRE(child);
  INFO("the parent reported: " << *child);
  std::istringstream words(*child);
  std::string word, how;
  int status = -1;
  long long childMs = -1;
  words >> word >> how >> status >> word >> childMs;
  CHECK(how == "exited");
  CHECK(status == 0);
  CHECK(childMs >= 0);
  CHECK(childMs < 2000);
  REQUIRE(since(readyAt, windowEnd) < 4s);  // the parent's first extend is 5 s after acquiring
  CHECK(callsAfter == callsBefore);
  CHECK(connectionsAfter == connectionsBefore);
  CHECK(redis.get(key) == Value("stream-parent"));

  // The parent's heartbeat goes on: the key's TTL is refreshed (it falls between extends).
  long long lowest = redis.pttl(key);
  const bool refreshed = lowest > 0 && test::waitUntil(
                                           [&] {
                                             const auto pttl = redis.pttl(key);
                                             if (pttl > lowest + 500) return true;
                                             lowest = std::min(lowest, pttl);
                                             return false;
                                           },
                                           15s, 20ms);
  CHECK(refreshed);
  CHECK(redis.get(key) == Value("stream-parent"));

  REQUIRE(parent.send("check"));
  const auto check = parent.readLine(30s);  // "check pg <pid> extended <n> lost <0|1> running <0|1>"
  REQUIRE(check);
  INFO("the parent reported: " << *check);
  std::istringstream fields(*check);
  std::string pgPidAfter;
  long long extends = -1;
  int lostFlag = -1, runningFlag = -1;
  fields >> word >> word >> pgPidAfter >> word >> extends >> word >> lostFlag >> word >> runningFlag;
  CHECK(pgPidAfter == pgPidBefore);  // libpq's PQfinish in the child would have ended this session
  CHECK(extends >= 1);
  CHECK(lostFlag == 0);
  CHECK(runningFlag == 1);

  REQUIRE(parent.send("quit"));
  const ChildEnd end = parent.wait(30s);
  INFO("writer_lifecycle_fork_exit " << end.describe());
  CHECK(end.exited);
  CHECK(end.exitStatus == 0);
}

// ---------------------------------------------------------------------------------------------
// [case 4] Options are validated: the constructor refuses, with InvalidArgument naming the option
// (its dotted path in Options), a zero or negative duration where none makes sense, a value so
// large that now() + value overflows, and a heartbeat interval not clearly below the TTL.
// Deadlines that callers pass (waitFor) saturate instead.

namespace {

struct BadOption {
  std::string option;  // the dotted name the message must contain
  std::string value;   // for the report
  std::function<void(Options&)> apply;
};

std::vector<BadOption> badOptions() {
  struct Timeout {
    const char* name;
    std::function<Milliseconds&(Options&)> field;
    bool zeroAllowed;  // lock.heartbeatInterval: zero is documented as "ttl / 3"
  };
  const std::vector<Timeout> timeouts{
      {"redis.lookupDeadline", [](Options& o) -> Milliseconds& { return o.redis.lookupDeadline; }, false},
      {"redis.commandTimeout", [](Options& o) -> Milliseconds& { return o.redis.commandTimeout; }, false},
      {"redis.connectTimeout", [](Options& o) -> Milliseconds& { return o.redis.connectTimeout; }, false},
      // A zero cool-down is not tested: it could be read as "probe at once", i.e. no cool-down.
      {"breaker.coolDown", [](Options& o) -> Milliseconds& { return o.breaker.coolDown; }, true},
      {"lock.heartbeatInterval", [](Options& o) -> Milliseconds& { return o.lock.heartbeatInterval; }, true},
      {"lock.acquirePollInterval", [](Options& o) -> Milliseconds& { return o.lock.acquirePollInterval; }, false},
      {"postgres.connectTimeout", [](Options& o) -> Milliseconds& { return o.postgres.connectTimeout; }, false},
      {"postgres.statementTimeout", [](Options& o) -> Milliseconds& { return o.postgres.statementTimeout; }, false},
      {"postgres.acquireTimeout", [](Options& o) -> Milliseconds& { return o.postgres.acquireTimeout; }, false},
      {"repair.lockTimeout", [](Options& o) -> Milliseconds& { return o.repair.lockTimeout; }, false},
      {"repair.statementTimeout", [](Options& o) -> Milliseconds& { return o.repair.statementTimeout; }, false},
  };
  const std::vector<std::pair<std::string, Milliseconds>> values{
      {"Milliseconds::max()", Milliseconds::max()},
      {"max() / 2", Milliseconds{std::numeric_limits<Milliseconds::rep>::max() / 2}},
      {"0 ms", Milliseconds{0}},
      {"-1 ms", Milliseconds{-1}},
      {"Milliseconds::min()", Milliseconds::min()},
  };
  std::vector<BadOption> bad;
  for (const auto& timeout : timeouts) {
    for (const auto& [label, value] : values) {
      if (value == Milliseconds{0} && timeout.zeroAllowed) continue;
      bad.push_back({timeout.name, label, [field = timeout.field, v = value](Options& o) { field(o) = v; }});
    }
  }
  const std::vector<std::pair<std::string, Seconds>> ttls{
      {"Seconds::max()", Seconds::max()},
      {"max() / 2", Seconds{std::numeric_limits<Seconds::rep>::max() / 2}},
      {"0 s", Seconds{0}},
      {"-1 s", Seconds{-1}},
  };
  for (const auto& [label, value] : ttls) {
    bad.push_back({"lock.ttl", label, [v = value](Options& o) { o.lock.ttl = v; }});
  }
  // A heartbeat interval not clearly below the TTL: at or above ttl - max(commandTimeout, 500 ms).
  auto interval = [](Seconds ttl, Milliseconds commandTimeout, Milliseconds heartbeat) {
    return [=](Options& o) {
      o.lock.ttl = ttl;
      o.redis.commandTimeout = commandTimeout;
      o.lock.heartbeatInterval = heartbeat;
    };
  };
  bad.push_back({"lock.heartbeatInterval", "2 s with ttl 3 s (= ttl - commandTimeout 1 s)", interval(3s, 1s, 2s)});
  bad.push_back({"lock.heartbeatInterval", "2.5 s with ttl 3 s, commandTimeout 1 s", interval(3s, 1s, 2500ms)});
  bad.push_back({"lock.heartbeatInterval", "3 s with ttl 3 s", interval(3s, 1s, 3s)});
  bad.push_back({"lock.heartbeatInterval", "4 s with ttl 3 s", interval(3s, 1s, 4s)});
  bad.push_back({"lock.heartbeatInterval", "2.5 s with ttl 3 s, commandTimeout 200 ms (= ttl - 500 ms)",
                 interval(3s, 200ms, 2500ms)});
  bad.push_back({"lock.heartbeatInterval", "59.5 s with ttl 60 s, commandTimeout 200 ms", interval(60s, 200ms, 59500ms)});
  return bad;
}

// Redis and PostgreSQL both configured, so that every option is one the Client uses. No
// connection opens: the constructor connects to nothing.
Options fullOptions(test::CapturedLog& log) {
  auto options = test::clientOptions(test::redisUrl(), log);
  options.postgres.conninfo = test::databaseUrl();
  return options;
}

}  // namespace

TEST_CASE("[case 4] the Client refuses an overflowing, zero or negative duration and a heartbeat interval not "
          "clearly below the TTL, naming the option") {
  const Watchdog watchdog("[case 4] option validation", 60s);
  test::CapturedLog log;
  for (const auto& bad : badOptions()) {
    INFO(bad.option << " = " << bad.value);
    auto options = fullOptions(log);
    bad.apply(options);
    std::optional<Error> refused;
    try {
      const Client client(options);
    } catch (const Error& error) {
      refused = error;
    }
    CHECK(refused.has_value());
    if (refused) {
      CHECK(refused->code() == ErrorCode::InvalidArgument);
      CHECK_THAT(refused->what(), Catch::Matchers::Contains(bad.option));
    }
  }
}

TEST_CASE("[case 4] valid edge configurations are accepted: ttl 3 s with the default interval and commandTimeout") {
  test::CapturedLog log;
  auto options = fullOptions(log);
  options.lock.ttl = 3s;  // interval ttl / 3 = 1 s, commandTimeout 1 s: loss due at 2 s
  CHECK_NOTHROW(Client(options));
  options.lock.heartbeatInterval = 1s;  // the same, spelled out
  CHECK_NOTHROW(Client(options));
  CHECK_NOTHROW(Client(fullOptions(log)));  // the defaults
}

TEST_CASE("[case 4] acquire with waitFor = Milliseconds::max() waits for the holder's release") {
  const Watchdog watchdog("[case 4] waitFor max", 60s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.acquirePollInterval = 20ms;
  Client holder(options);
  Client waiter(options);
  auto held = holder.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(held);

  auto releaser = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(300ms);  // the scenario: the holder finishes 300 ms later
    return held->release();
  });
  const auto start = Clock::now();
  const Acquired waited = acquire(waiter, "chat-1", "stream-2", Milliseconds::max());
  const auto elapsed = test::elapsedSince(start);
  const auto released = releaser.get();

  INFO("acquire(waitFor = max) gave " << waited.describe() << " after " << elapsed.count() << " ms");
  CHECK(released == ReleaseOutcome::Released);
  REQUIRE(waited.lock);
  CHECK(elapsed >= 250ms);  // it waited for the release...
  CHECK(elapsed < 10s);     // ...and took the lock once it was free
  CHECK(redis.get(test::lockKey(options, "chat-1")) == Value("stream-2"));
}

TEST_CASE("[case 4] a negative waitFor is no wait: nullopt at once while another stream holds the lock") {
  const Watchdog watchdog("[case 4] negative waitFor", 60s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  const auto options = test::clientOptions(test::redisUrl(), log);
  Client holder(options);
  Client waiter(options);
  auto held = holder.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(held);

  for (const auto& [label, waitFor] : std::vector<std::pair<std::string, Milliseconds>>{
           {"-1 ms", Milliseconds{-1}}, {"-1 h", Milliseconds{-3600000}}, {"Milliseconds::min()", Milliseconds::min()}}) {
    INFO("waitFor = " << label);
    // On a thread, so that a wait that never ends fails here rather than at the watchdog.
    auto attempt = std::async(std::launch::async, [&waiter, waitFor = waitFor] {
      const auto start = Clock::now();
      Acquired result = acquire(waiter, "chat-1", "stream-2", waitFor);
      return std::make_pair(std::move(result), test::elapsedSince(start));
    });
    const bool returned = attempt.wait_for(5s) == std::future_status::ready;
    CHECK(returned);
    if (!returned) {
      // The lock freeing up ends any wait, so that the thread can be joined.
      held->release();
      attempt.wait();
      break;
    }
    const auto [result, elapsed] = attempt.get();
    INFO("it gave " << result.describe() << " after " << elapsed.count() << " ms");
    CHECK_FALSE(result.lock);
    CHECK_FALSE(result.error);  // nullopt ("busy"), no exception
    CHECK(elapsed < 1s);        // one attempt: commandTimeout at most, milliseconds in fact
  }
  CHECK(redis.get(test::lockKey(options, "chat-1")) == Value("stream-1"));
}

// ---------------------------------------------------------------------------------------------
// [case 5] "Blocks at most X" counts connecting. With default options a reconcile with repair
// returns within 1.5 s while PostgreSQL accepts TCP and never answers (the connect timeout alone
// is 2 s by default: the repair's own bound must cover connecting).

TEST_CASE("[case 5] a reconcile with repair returns within 1.5 s while PostgreSQL accepts TCP and never answers") {
  const Watchdog watchdog("[case 5] repair on a hung PostgreSQL", 60s);
  std::optional<test::SilentListener> postgres;
  SECTION("connections left in the accept queue") { postgres.emplace(test::SilentListener::Mode::Backlog); }
  SECTION("connections accepted, never answered") { postgres.emplace(test::SilentListener::Mode::Accept); }
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.postgres.conninfo =
      "host=127.0.0.1 port=" + std::to_string(postgres->port()) + " dbname=streamlock_test user=postgres";
  Client client(options);

  // A marker whose lock Redis verifiably lacks: stale, so the repair runs.
  const std::vector<streamlock::MarkerCandidate> candidates{{"chat-stale", std::string("stream-gone")}};
  const auto start = Clock::now();
  const auto result = client.reconcileChatStreamMarkers(candidates, streamlock::ReconcileOptions{true});
  const auto elapsed = test::elapsedSince(start);

  INFO("the reconcile returned after " << elapsed.count() << " ms");
  CHECK(elapsed < 1500ms);
  CHECK(result.status == LookupStatus::Verified);
  REQUIRE(result.markers.size() == 1);
  CHECK(result.markers[0].state == MarkerState::Inactive);
  CHECK_FALSE(result.markers[0].streamId);
  CHECK(result.repair.failed);
  CHECK(result.repair.cleared == 0);
  CHECK(client.counters().repairFailures == 1);
}

// ---------------------------------------------------------------------------------------------
// [case 6] and [rule c] Ownership loss is reported by a timer, even while an extend is in flight,
// once ttl - max(commandTimeout, 500 ms) has passed since the last successful extend was sent (or
// since the acquire was sent). With ttl 3 s and the defaults (interval 1 s, commandTimeout 1 s):
// 2 s. Reported = the callback ran AND Heartbeat::ownershipLost() is true. 300 ms of margin for
// scheduling on a busy machine; in any case before the lock's 3 s are up.

namespace {

struct LossReport {
  bool reported = false;
  std::optional<Clock::time_point> flagAt;      // when ownershipLost() was first seen true
  std::optional<Clock::time_point> callbackAt;  // when the callback ran
};

LossReport awaitLoss(const streamlock::Heartbeat& heartbeat, const LossRecorder& lost) {
  LossReport report;
  report.reported = test::waitUntil(
      [&] {
        if (!report.flagAt && heartbeat.ownershipLost()) report.flagAt = Clock::now();
        report.callbackAt = lost.firstAt();
        return report.flagAt && report.callbackAt;
      },
      10s, 1ms);
  return report;
}

}  // namespace

TEST_CASE("[case 6] ownership loss is reported no later than ttl - max(commandTimeout, 500 ms) after the acquire "
          "when no extend ever succeeds") {
  const Watchdog watchdog("[case 6]", 60s);
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 3s;  // default interval (1 s) and commandTimeout (1 s)
  Client client(options);

  const auto start = Clock::now();  // the acquire is sent after this
  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LossRecorder lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  server.pause();  // before the first extend (due 1 s after the acquire)

  const LossReport report = awaitLoss(heartbeat, lost);
  server.resume();
  REQUIRE(report.reported);
  const auto flagAfter = since(start, *report.flagAt);
  const auto callbackAfter = since(start, *report.callbackAt);
  INFO("ownershipLost() after " << flagAfter.count() << " ms, the callback after " << callbackAfter.count()
                                << " ms (due at 2000 ms)");
  CHECK(flagAfter <= 2300ms);
  CHECK(callbackAfter <= 2300ms);
  CHECK(flagAfter < 3s);
  CHECK(callbackAfter < 3s);
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
}

TEST_CASE("[rule c] ownership loss is reported no later than ttl - max(commandTimeout, 500 ms) after the last "
          "successful extend was sent") {
  const Watchdog watchdog("[rule c]", 60s);
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 3s;  // default interval (1 s) and commandTimeout (1 s)
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LossRecorder lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());
  REQUIRE(test::waitUntil([&] { return client.counters().heartbeatsExtended >= 1; }, 10s, 1ms));
  const auto extendedSeenAt = Clock::now();  // that extend was sent before this
  server.pause();                            // the next one is due a second later

  const LossReport report = awaitLoss(heartbeat, lost);
  server.resume();
  REQUIRE(report.reported);
  const auto flagAfter = since(extendedSeenAt, *report.flagAt);
  const auto callbackAfter = since(extendedSeenAt, *report.callbackAt);
  INFO("after the extend was seen: ownershipLost() after " << flagAfter.count() << " ms, the callback after "
                                                           << callbackAfter.count() << " ms (due by 2000 ms)");
  CHECK(client.counters().heartbeatsExtended == 1);
  CHECK(flagAfter <= 2300ms);
  CHECK(callbackAfter <= 2300ms);
  CHECK(lost.calls() == Calls{{"chat-1", "stream-1"}});
}

// ---------------------------------------------------------------------------------------------
// [rule a] A lookup that failed only waiting for a pooled connection is unknown but does not count
// toward opening the breaker.
//
// With per-call checkout (pools of redis.poolSize connections), a lock call that holds the only
// connection against a paused Redis makes the concurrent lookups fail waiting for the pool: none
// of them reaches Redis, and the breaker must stay closed. With shared, pipelined connections
// (the redesign) no lookup waits for a connection: the lookups go out behind the hung SET and fail
// on Redis itself, and then they may count. What the test pins, in both designs: the breaker may
// open only when at least failureThreshold lookups reached Redis (MGETs that the server executed
// once resumed). Lookups that never reached it are not Redis failures.

TEST_CASE("[rule a] lookups that failed only waiting for a pooled connection do not open the breaker") {
  const Watchdog watchdog("[rule a]", 60s);
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.redis.poolSize = 1;
  options.redis.commandTimeout = 5s;  // the lock call holds the connection through the lookups
  options.redis.lookupDeadline = 100ms;
  Client client(options);
  const auto threshold = options.breaker.failureThreshold;
  REQUIRE(threshold == 3);
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified; }));  // the connection is open
  const auto mgetsBefore = redis.calls("mget");

  server.pause();
  auto holder = std::async(std::launch::async, [&] { return acquire(client, "chat-held", "stream-held"); });
  // The lock call is on the connection: its SET waits, unread, in the paused server's socket.
  REQUIRE(test::waitUntil([&] { return bytesWaitingAtServer(server.port()) > 0; }, 10s));

  constexpr int lookups = 5;  // more than failureThreshold
  std::vector<std::future<LookupStatus>> concurrent;
  for (int i = 0; i < lookups; ++i) {
    concurrent.push_back(std::async(std::launch::async, [&client, i] {
      return client.getActiveChatStreamIds({"chat-" + std::to_string(i)}).status;
    }));
  }
  std::vector<LookupStatus> statuses;
  for (auto& lookup : concurrent) statuses.push_back(lookup.get());
  const auto counters = client.counters();
  const auto breaker = client.breakerState();
  server.resume();
  const Acquired held = holder.get();
  const auto mgetsReached = redis.calls("mget") - mgetsBefore;

  for (const auto status : statuses) CHECK(status == LookupStatus::Unknown);
  INFO("lookups that reached Redis during the outage: " << mgetsReached << "; the breaker opened "
                                                         << counters.breakerOpened << " time(s)");
  if (mgetsReached < static_cast<long long>(threshold)) {
    CHECK(counters.breakerOpened == 0);
    CHECK(std::string(streamlock::toString(breaker)) == "closed");
  }
  INFO("the lock call gave " << held.describe());
  CHECK(held.lock);  // it completes once Redis answers again
}

// ---------------------------------------------------------------------------------------------
// [rule b] An extend that fails is retried soon: within min(1 s, interval / 4), not a whole
// interval later. interval 4 s: the retry is due 1 s after the failure, a whole interval 4 s. The
// failure is a timeout (Redis paused, commandTimeout 200 ms) or an error reply (the user may no
// longer run any command but those the test reads with); the next successful extend must come
// within 2.5 s of the failure. (With the pause, the timed-out extend itself may still run once
// Redis resumes; the error reply section has no such late success.)

TEST_CASE("[rule b] a failed extend is retried within min(1 s, interval / 4)") {
  const Watchdog watchdog("[rule b]", 60s);
  test::RedisServerProcess server;
  test::TestRedis admin(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.lock.ttl = 15s;
  options.lock.heartbeatInterval = 4s;
  options.redis.commandTimeout = 200ms;
  Client client(options);

  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  LossRecorder lost;
  auto heartbeat = lock->startHeartbeat(lost.callback());

  std::function<void()> breakRedis;
  std::function<void()> mendRedis;
  SECTION("the extend timed out") {
    breakRedis = [&] { server.pause(); };
    mendRedis = [&] { server.resume(); };
  }
  SECTION("the extend was answered with an error") {
    breakRedis = [&] { admin.ok({"ACL", "SETUSER", "default", "-@all", "+acl", "+info", "+get", "+pttl"}); };
    mendRedis = [&] { admin.ok({"ACL", "SETUSER", "default", "+@all"}); };
  }
  breakRedis();  // the first extend is due 4 s after the acquire
  const bool failed = test::waitUntil([&] { return client.counters().heartbeatsFailed >= 1; }, 15s, 1ms);
  const auto failedSeenAt = Clock::now();
  mendRedis();
  REQUIRE(failed);
  const auto extendedBefore = client.counters().heartbeatsExtended;
  const bool extended =
      test::waitUntil([&] { return client.counters().heartbeatsExtended > extendedBefore; }, 15s, 1ms);
  const auto retriedAfter = test::elapsedSince(failedSeenAt);

  INFO("the next successful extend came " << retriedAfter.count() << " ms after the failure (retry due after 1000 ms, "
                                          << "a whole interval is 4000 ms)");
  REQUIRE(extended);
  CHECK(retriedAfter < 2500ms);
  CHECK(heartbeat.running());
  CHECK_FALSE(heartbeat.ownershipLost());
  CHECK(lost.count() == 0);
  CHECK(admin.get(test::lockKey(options, "chat-1")) == Value("stream-1"));
}

// ---------------------------------------------------------------------------------------------
// The ownership-lost callback must not run where blocking delays other heartbeats: without an
// executor, callbacks run on the library's callback thread, never the I/O thread. Lock A's
// callback blocks (up to 5 s) while lock B, TTL 3 s and interval 1 s, must keep being extended.

TEST_CASE("[callback thread] a blocking ownership-lost callback does not delay the heartbeats of other locks") {
  const Watchdog watchdog("[callback thread]", 60s);
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  auto options = test::clientOptions(test::redisUrl(), log);
  options.lock.ttl = 3s;
  options.lock.heartbeatInterval = 1s;
  Client client(options);
  const auto keyA = test::lockKey(options, "chat-a");
  const auto keyB = test::lockKey(options, "chat-b");

  auto lockA = client.acquireStreamLock("chat-a", "stream-a");
  auto lockB = client.acquireStreamLock("chat-b", "stream-b");
  REQUIRE(lockA);
  REQUIRE(lockB);
  auto entered = std::make_shared<Event>();
  auto release = std::make_shared<Event>();
  auto returned = std::make_shared<Event>();
  LossRecorder lostA;
  auto heartbeatA = lockA->startHeartbeat(lostA.callback([entered, release, returned] {
    entered->set();
    release->waitFor(5s);
    returned->set();
  }));
  LossRecorder lostB;
  auto heartbeatB = lockB->startHeartbeat(lostB.callback());

  redis.del(keyA);
  REQUIRE(entered->waitFor(10s));
  const auto extendedAtEntry = client.counters().heartbeatsExtended;
  // Two of B's extends (one a second) while A's callback blocks.
  const bool kept = test::waitUntil([&] { return client.counters().heartbeatsExtended >= extendedAtEntry + 2; }, 3s);
  const auto pttlB = redis.pttl(keyB);
  const bool stillBlocking = !returned->isSet();
  release->set();

  INFO("B's extends while A's callback blocked: " << client.counters().heartbeatsExtended - extendedAtEntry
                                                  << "; B's PTTL then: " << pttlB << " ms");
  CHECK(stillBlocking);  // what was measured, was measured while the callback blocked
  CHECK(kept);
  CHECK(pttlB > 1500);  // extended within the last second or so: far from expiring
  CHECK(redis.get(keyB) == Value("stream-b"));
  CHECK(heartbeatB.running());
  CHECK_FALSE(heartbeatB.ownershipLost());
  CHECK(lostB.count() == 0);
  CHECK(returned->waitFor(10s));
  CHECK(lostA.calls() == Calls{{"chat-a", "stream-a"}});
}
