// Chaos test, kill -9: many stream_worker processes stream into chats of one workspace with a
// short lock TTL; a seeded random 30% of them are killed with SIGKILL mid-stream, while reader
// threads poll GET /api/mothership/chats the whole time. At the end it prints its figures and
// checks, against ground truth recorded independently of the server:
//   1. a stream holding its lock is never reported inactive (Redis stays up: lookups verified);
//   2. no repair ever clears the marker of a live stream;
//   3. every orphaned marker is reported inactive within the lock TTL plus one read, and is
//      repaired in the database;
//   4. no request fails.
//
// Ground truth, all on the machine's CLOCK_REALTIME (the test, PostgreSQL's clock_timestamp()):
// - each worker's stdout: "marker written" is printed after the marker's commit, so the time the
//   test reads that line bounds the commit from above;
// - the test's own SIGKILL (time taken before kill()) and the reaping of the process (after it);
// - an audit trigger installed on copilot_chats records every change of conversation_id with
//   clock_timestamp() and the statement that made it (the server's repair is the only statement
//   using unnest()); the trigger fires before its transaction commits;
// - keyspace notifications of a private redis-server record each lock's set / expire / del /
//   expired events (used to detect a lock lost by a live worker, and for figures).
//
// Two cases: the locks on a private redis-server (ctest chaos.kill9), and on the shared Redis
// Cluster of tests/run.sh (chaos.kill9_cluster, issue 11: the server and the workers get its
// redis-cluster:// URL, and the test watches every master).
//
// Environment (defaults fit CI, about 30 s): STREAMLOCK_CHAOS_STREAMS (50), STREAMLOCK_CHAOS_SECONDS
// (20, the length of the streaming phase), STREAMLOCK_CHAOS_SEED (random, printed),
// STREAMLOCK_CHAOS_KILL_PERCENT (30), STREAMLOCK_CHAOS_TTL_S (3), STREAMLOCK_CHAOS_READERS (4).

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>

#include "env.h"
#include "harness.h"
#include "redis_cluster.h"

using namespace servertest;

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
// Redis expires a key when its clock passes the deadline in whole milliseconds; the same clock
// as ours, so this only covers the rounding.
constexpr double kExpirySlackS = 0.010;

double wallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

long envLong(const char* name, long fallback, long minimum, long maximum) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < minimum || value > maximum) {
    throw std::runtime_error(std::string(name) + " must be a whole number in [" + std::to_string(minimum) + ", " +
                             std::to_string(maximum) + "]");
  }
  return value;
}

std::uint64_t envSeed() {
  const char* text = std::getenv("STREAMLOCK_CHAOS_SEED");
  if (text != nullptr && *text != '\0') {
    char* end = nullptr;
    errno = 0;
    const unsigned long long value = std::strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') throw std::runtime_error("STREAMLOCK_CHAOS_SEED must be a number");
    return value;
  }
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32u) ^ device();
}

struct Settings {
  std::size_t streams = 50;
  long seconds = 20;
  std::uint64_t seed = 0;
  long killPercent = 30;
  long ttlS = 3;
  std::size_t readers = 4;
};

Settings readSettings() {
  Settings s;
  s.streams = static_cast<std::size_t>(envLong("STREAMLOCK_CHAOS_STREAMS", 50, 1, 100000));
  s.seconds = envLong("STREAMLOCK_CHAOS_SECONDS", 20, 10, 86400);
  s.seed = envSeed();
  s.killPercent = envLong("STREAMLOCK_CHAOS_KILL_PERCENT", 30, 0, 100);
  s.ttlS = envLong("STREAMLOCK_CHAOS_TTL_S", 3, 1, 60);
  s.readers = static_cast<std::size_t>(envLong("STREAMLOCK_CHAOS_READERS", 4, 1, 64));
  return s;
}

// ---- the workers ----

struct Worker {
  // The plan.
  std::string chatId;
  std::string streamId;
  double startOffset = 0;  // seconds after the streaming phase starts
  long durationS = 0;
  bool planKill = false;
  double killDelay = 0;    // seconds after "marker written" was read

  // What happened (the monitor loop's own, read by the main thread after it ends).
  bool spawned = false;
  bool reaped = false;
  bool killSent = false;
  bool killedBySigkill = false;
  bool reportedLost = false;
  bool reportedCleared = false;
  pid_t pid = -1;
  int fd = -1;
  std::string buffer;
  std::deque<std::string> tail;  // its last output lines, for diagnostics
  int exitCode = -1;             // exit code, or 128 + signal
  double spawnAt = 0;
  double markerAt = 0;           // "marker written" read (after the marker's commit)
  double killAt = 0;             // just before kill(SIGKILL)
  double deadAt = 0;             // reaped (after the death)

  // From the audit trigger.
  double writeAt = 0;                // NULL -> streamId
  double workerClearAt = kInfinity;  // streamId -> NULL by the worker's compare-and-clear
  double repairAt = kInfinity;       // streamId -> NULL by the server's repair
  // From the keyspace notifications.
  double firstExpiredAt = kInfinity; // "expired" event received
  double maxHeartbeatGap = 0;        // between set/expire events of the held lock
  double lastExtendAt = 0;           // the last set/expire event received (after Redis ran it)
  bool lost = false;                 // the lock was lost while the worker lived
};

std::string stdoutLine(Worker& w, const std::string& line) {
  w.tail.push_back(line);
  if (w.tail.size() > 12) w.tail.pop_front();
  return line;
}

void spawnWorker(Worker& w, const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  try {
    w.pid = servertest::spawnProcess(argv, fds[1], fds[1]);
  } catch (...) {
    close(fds[0]);
    close(fds[1]);
    throw;
  }
  close(fds[1]);
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  w.fd = fds[0];
  w.spawned = true;
  w.spawnAt = wallNow();
}

// Reads what a worker printed, timestamping the lines; on EOF reaps it.
void drainWorker(Worker& w) {
  char chunk[4096];
  for (;;) {
    const ssize_t n = read(w.fd, chunk, sizeof chunk);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n > 0) {
      const double at = wallNow();
      w.buffer.append(chunk, static_cast<std::size_t>(n));
      for (auto newline = w.buffer.find('\n'); newline != std::string::npos; newline = w.buffer.find('\n')) {
        const auto line = stdoutLine(w, w.buffer.substr(0, newline));
        w.buffer.erase(0, newline + 1);
        if (line.rfind("marker written", 0) == 0 && w.markerAt == 0) w.markerAt = at;
        if (line.find("ownership lost") != std::string::npos) w.reportedLost = true;
        if (line == "marker cleared") w.reportedCleared = true;
      }
      continue;
    }
    // EOF (or a read error): the worker is gone or going; reap it.
    close(w.fd);
    w.fd = -1;
    int status = 0;
    while (waitpid(w.pid, &status, 0) < 0 && errno == EINTR) {
    }
    w.deadAt = wallNow();
    w.reaped = true;
    if (WIFEXITED(status)) {
      w.exitCode = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      w.exitCode = 128 + WTERMSIG(status);
      w.killedBySigkill = WTERMSIG(status) == SIGKILL;
    }
    if (!w.buffer.empty()) stdoutLine(w, w.buffer);
    return;
  }
}

// Kills and reaps whatever is still running if the test stops early.
struct WorkerReaper {
  std::vector<Worker>& workers;
  ~WorkerReaper() {
    for (auto& w : workers) {
      if (w.spawned && !w.reaped) {
        ::kill(w.pid, SIGKILL);
        int status = 0;
        waitpid(w.pid, &status, 0);
        w.reaped = true;
      }
      if (w.fd >= 0) close(w.fd);
      w.fd = -1;
    }
  }
};

// ---- the readers ----

enum ChatState : std::uint8_t { kInactive = 0, kOwnStream = 1, kOtherId = 2, kMissing = 3 };

struct Read {
  double start = 0;
  double end = 0;
  int status = 0;                    // 0: no answer, -1: unparsable body
  std::vector<std::uint8_t> states;  // per chat index
};

struct Readers {
  int port = 0;
  std::string path;
  std::string token;
  const std::vector<Worker>* workers = nullptr;
  std::unordered_map<std::string, std::size_t> chatIndex;
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> done{0};
  std::vector<std::vector<Read>> results;
  std::vector<std::thread> threads;

  void run(std::size_t slot) {
    httplib::Client client("127.0.0.1", port);
    client.set_keep_alive(true);
    client.set_connection_timeout(5, 0);
    client.set_read_timeout(30, 0);
    const httplib::Headers headers{{"Authorization", "Bearer " + token}};
    auto& out = results[slot];
    while (!stop) {
      Read sample;
      sample.start = wallNow();
      const auto result = client.Get(path.c_str(), headers);
      sample.end = wallNow();
      sample.status = result ? result->status : 0;
      if (sample.status == 200) {
        sample.states.assign(chatIndex.size(), kMissing);
        try {
          const auto body = Json::parse(result->body);
          for (const auto& chat : body.at("data")) {
            const auto found = chatIndex.find(chat.at("id").get<std::string>());
            if (found == chatIndex.end()) continue;
            const auto& active = chat.at("activeStreamId");
            std::uint8_t state = kInactive;
            if (!active.is_null()) {
              state = active.get<std::string>() == (*workers)[found->second].streamId ? kOwnStream : kOtherId;
            }
            sample.states[found->second] = state;
          }
        } catch (const std::exception&) {
          sample.status = -1;
        }
      }
      out.push_back(std::move(sample));
      ++done;
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
  }

  void start(std::size_t count) {
    results.resize(count);
    for (std::size_t i = 0; i < count; ++i) threads.emplace_back([this, i] { run(i); });
  }

  void join() {
    stop = true;
    for (auto& thread : threads) thread.join();
    threads.clear();
  }

  ~Readers() {
    if (!threads.empty()) join();
  }
};

// ---- the lock events (keyspace notifications of the private Redis) ----

struct LockEvent {
  double at = 0;
  std::size_t chat = 0;
  char kind = '?';  // s: set, e: expire, d: del, x: expired
};

redisContext* connectRedis(int port) {
  const timeval timeout{5, 0};
  redisContext* context = redisConnectWithTimeout("127.0.0.1", port, timeout);
  if (context == nullptr || context->err != 0) {
    const std::string message = context != nullptr ? context->errstr : "out of memory";
    if (context != nullptr) redisFree(context);
    throw std::runtime_error("cannot connect to the private Redis: " + message);
  }
  return context;
}

constexpr const char* kKeyspacePrefix = "__keyspace@0__:copilot:chat-stream-lock:";
constexpr const char* kStopChannel = "chaos:stop";

struct LockWatch {
  int port = 0;
  const std::unordered_map<std::string, std::size_t>* chatIndex = nullptr;
  redisContext* control = nullptr;
  redisContext* subscriber = nullptr;
  std::vector<LockEvent> events;
  std::thread thread;
  std::string error;

  void start() {
    control = connectRedis(port);
    freeReplyObject(runRedis(control, {"CONFIG", "SET", "notify-keyspace-events", "K$gx"}));
    subscriber = connectRedis(port);
    freeReplyObject(runRedis(subscriber, {"PSUBSCRIBE", std::string(kKeyspacePrefix) + "*"}));
    freeReplyObject(runRedis(subscriber, {"SUBSCRIBE", kStopChannel}));
    thread = std::thread([this] { listen(); });
  }

  void listen() {
    const std::size_t prefixLength = std::strlen(kKeyspacePrefix);
    for (;;) {
      void* raw = nullptr;
      if (redisGetReply(subscriber, &raw) != REDIS_OK || raw == nullptr) {
        error = subscriber->errstr;
        return;
      }
      const double at = wallNow();
      auto* reply = static_cast<redisReply*>(raw);
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 3) {
        const std::string type(reply->element[0]->str, reply->element[0]->len);
        if (type == "message") {
          freeReplyObject(reply);
          return;  // chaos:stop
        }
        if (type == "pmessage" && reply->elements == 4) {
          const std::string channel(reply->element[2]->str, reply->element[2]->len);
          const std::string event(reply->element[3]->str, reply->element[3]->len);
          const auto found = chatIndex->find(channel.substr(std::min(prefixLength, channel.size())));
          char kind = '?';
          if (event == "set") kind = 's';
          if (event == "expire") kind = 'e';
          if (event == "del") kind = 'd';
          if (event == "expired") kind = 'x';
          if (found != chatIndex->end() && kind != '?') events.push_back({at, found->second, kind});
        }
      }
      freeReplyObject(reply);
    }
  }

  void stop() {
    if (!thread.joinable()) return;
    try {
      freeReplyObject(runRedis(control, {"PUBLISH", kStopChannel, "stop"}));
    } catch (const std::exception&) {
      // The subscriber then ends on the connection's error below.
    }
    thread.join();
  }

  ~LockWatch() {
    stop();
    if (subscriber != nullptr) redisFree(subscriber);
    if (control != nullptr) redisFree(control);
  }
};

// ---- PostgreSQL: the audit trigger ----

const char* const kAuditSql = R"SQL(
CREATE TABLE chaos_marker_audit (
  seq bigserial PRIMARY KEY,
  chat_id uuid NOT NULL,
  old_value text,
  new_value text,
  at_epoch numeric NOT NULL,
  backend_pid integer NOT NULL,
  statement_timeout text NOT NULL,
  query text);
CREATE FUNCTION chaos_marker_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO chaos_marker_audit (chat_id, old_value, new_value, at_epoch, backend_pid, statement_timeout, query)
  VALUES (NEW.id, OLD.conversation_id, NEW.conversation_id, extract(epoch FROM clock_timestamp()),
          pg_backend_pid(), current_setting('statement_timeout'), left(current_query(), 400));
  RETURN NULL;
END $$;
CREATE TRIGGER chaos_marker_audit AFTER UPDATE OF conversation_id ON copilot_chats
  FOR EACH ROW WHEN (OLD.conversation_id IS DISTINCT FROM NEW.conversation_id)
  EXECUTE FUNCTION chaos_marker_audit();
)SQL";

struct AuditRow {
  std::string chatId;
  std::optional<std::string> oldValue;
  std::optional<std::string> newValue;
  double at = 0;
  std::string pid;
  std::string statementTimeout;
  std::string query;
  bool repair = false;  // the server's repair statement (the only one using unnest)
};

// ---- metrics ----

double metric(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

// Non-200 answers of the chat routes, from mothership_http_requests_total.
double failedChatRequests(const std::string& text) {
  double failed = 0;
  std::size_t at = 0;
  const std::string prefix = "mothership_http_requests_total{route=\"/api/mothership/chats";
  while ((at = text.find(prefix, at)) != std::string::npos) {
    const auto lineEnd = text.find('\n', at);
    const auto line = text.substr(at, lineEnd - at);
    at = lineEnd;
    if (line.find("status=\"200\"") == std::string::npos) failed += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return failed;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(std::floor(p * static_cast<double>(values.size() - 1)));
  return values[index];
}

struct Violation {
  int check;
  std::string text;
};

// Where the locks live: the URL the server and the workers get, and the Redis servers whose
// keyspace notifications and keys the test watches (every master of a cluster).
struct RedisTarget {
  std::string url;
  std::vector<int> ports;
  std::string name;
};

void runChaos(const RedisTarget& target);

}  // namespace

TEST_CASE("kill -9 chaos: writers killed mid-stream while readers poll the chat list", "[chaos]") {
  // A private Redis: keyspace notifications are switched on in it.
  PrivateRedis redis;
  runChaos({redis.url(), {std::stoi(redis.url().substr(redis.url().rfind(':') + 1))}, "a private redis-server"});
}

// Issue 11: the same against the shared Redis Cluster of tests/run.sh (each chat's lock on the
// master of its slot). It runs alone (RUN_SERIAL) and only adds keyspace notifications to the
// masters, switched off again at the end.
TEST_CASE("kill -9 chaos on a Redis Cluster: writers killed mid-stream while readers poll the chat list",
          "[chaos][cluster]") {
  std::vector<int> seeds;
  for (const auto& [host, port] : streamlock::test::clusterNodes()) seeds.push_back(port);
  streamlock::test::ClusterView view(seeds);
  const auto masters = view.masterPorts();
  REQUIRE(masters.size() == 3);
  struct NotificationsOff {
    streamlock::test::ClusterView& view;
    std::vector<int> masters;
    ~NotificationsOff() {
      for (const int port : masters) {
        try {
          view.command(port, {"CONFIG", "SET", "notify-keyspace-events", ""});
        } catch (const std::exception&) {
        }
      }
    }
  } off{view, masters};
  runChaos({streamlock::test::clusterUrl(), masters, "the shared Redis Cluster"});
}

namespace {

void runChaos(const RedisTarget& target) {
  const Settings settings = readSettings();
  const double ttl = static_cast<double>(settings.ttlS);
  std::printf("chaos: seed %llu (replay the plan with STREAMLOCK_CHAOS_SEED=%llu)\n",
              static_cast<unsigned long long>(settings.seed), static_cast<unsigned long long>(settings.seed));
  std::fflush(stdout);
  std::mt19937_64 rng(settings.seed);

  // Services: the Redis target (keyspace notifications), the server with repair on, a caller.
  std::printf("chaos: locks on %s (%s)\n", target.name.c_str(), target.url.c_str());
  const Server server({"--redis-url", target.url, "--lock-ttl-s", std::to_string(settings.ttlS),
                       "--redis-timeout-ms", "1000"});
  Sql& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const Caller caller = newCaller(seed);
  sql.exec(kAuditSql);

  // The plan: one stream per chat, staggered starts, durations of 3..8 s, a seeded subset killed.
  const long maxDurationS = 8;
  const double startWindow = static_cast<double>(settings.seconds - maxDurationS);
  std::vector<Worker> workers(settings.streams);
  Readers readers;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    auto& w = workers[i];
    w.chatId = seed.chat(caller.userId, caller.workspaceId, "chaos " + std::to_string(i));
    w.streamId = "chaos-" + std::to_string(settings.seed % 1000000) + "-" + std::to_string(i);
    w.startOffset = std::uniform_real_distribution<double>(0, startWindow)(rng);
    w.durationS = std::uniform_int_distribution<long>(3, maxDurationS)(rng);
    readers.chatIndex.emplace(w.chatId, i);
  }
  std::vector<std::size_t> order(workers.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  const auto plannedKills = static_cast<std::size_t>(
      std::lround(static_cast<double>(workers.size()) * static_cast<double>(settings.killPercent) / 100.0));
  for (std::size_t k = 0; k < plannedKills; ++k) {
    auto& w = workers[order[k]];
    w.planKill = true;
    // Mid-stream: at least 0.5 s after the marker, and 0.7 s before the stream would end.
    w.killDelay = std::uniform_real_distribution<double>(0.5, static_cast<double>(w.durationS) - 0.7)(rng);
  }
  std::printf("chaos: %zu streams (%zu to be killed with SIGKILL), lock TTL %ld s, starts over %.0f s, "
              "%zu readers\n",
              workers.size(), plannedKills, settings.ttlS, startWindow, settings.readers);
  std::fflush(stdout);

  std::vector<std::unique_ptr<LockWatch>> watches;  // one per server: a chat's events all come from one
  for (const int port : target.ports) {
    watches.push_back(std::make_unique<LockWatch>());
    watches.back()->port = port;
    watches.back()->chatIndex = &readers.chatIndex;
    watches.back()->start();
  }

  readers.port = server.port();
  readers.path = chatListPath(caller.workspaceId);
  readers.token = caller.token;
  readers.workers = &workers;
  readers.start(settings.readers);
  REQUIRE(eventually([&] { return readers.done >= settings.readers; }, std::chrono::seconds{30}));

  // The streaming phase: one loop starts workers, kills the chosen ones mid-stream, reads their
  // output and reaps them.
  const double testStart = wallNow();
  const double phaseStart = testStart + 0.2;
  const double hardDeadline = phaseStart + static_cast<double>(settings.seconds) + 120;
  const std::vector<std::string> baseArgs{workerBinary(), "--database-url", TestDatabase::get().conninfo(),
                                          "--redis-url", target.url, "--lock-ttl-s",
                                          std::to_string(settings.ttlS)};
  {
    WorkerReaper reaper{workers};
    std::vector<pollfd> fds;
    std::vector<std::size_t> owners;
    for (;;) {
      const double now = wallNow();
      bool allReaped = true;
      for (auto& w : workers) {
        if (!w.spawned && now >= phaseStart + w.startOffset) {
          auto args = baseArgs;
          args.insert(args.end(), {"--chat-id", w.chatId, "--stream-id", w.streamId, "--duration-s",
                                   std::to_string(w.durationS)});
          spawnWorker(w, args);
        }
        if (w.spawned && !w.reaped && w.planKill && !w.killSent && w.markerAt > 0 &&
            now >= w.markerAt + w.killDelay) {
          w.killAt = wallNow();
          ::kill(w.pid, SIGKILL);  // not yet reaped, so the pid is still this worker's
          w.killSent = true;
        }
        allReaped = allReaped && w.reaped;
      }
      if (allReaped) break;
      if (now > hardDeadline) FAIL("the workers did not finish in time");
      fds.clear();
      owners.clear();
      for (std::size_t i = 0; i < workers.size(); ++i) {
        if (workers[i].fd >= 0) {
          fds.push_back({workers[i].fd, POLLIN, 0});
          owners.push_back(i);
        }
      }
      if (poll(fds.data(), fds.size(), 5) > 0) {
        for (std::size_t j = 0; j < fds.size(); ++j) {
          if (fds[j].revents != 0) drainWorker(workers[owners[j]]);
        }
      }
    }
  }

  // Keep reading until every orphaned marker's lock has expired, plus a second.
  double lastDeadline = wallNow();
  for (const auto& w : workers) {
    if (w.killSent) lastDeadline = std::max(lastDeadline, w.deadAt + ttl + kExpirySlackS);
  }
  while (wallNow() < lastDeadline + 1.0) std::this_thread::sleep_for(std::chrono::milliseconds{50});
  readers.join();
  std::vector<LockEvent> lockEventList;
  std::string watchErrors;
  for (auto& watch : watches) {
    watch->stop();
    lockEventList.insert(lockEventList.end(), watch->events.begin(), watch->events.end());
    watchErrors += watch->error;
  }
  const double testEnd = wallNow();
  INFO("lock watch: " << watchErrors);

  const std::string metricsText = server.get("/metrics").body;

  // ---- ground truth from the database ----
  std::unordered_map<std::string, std::size_t> streamIndex;
  for (std::size_t i = 0; i < workers.size(); ++i) streamIndex.emplace(workers[i].streamId, i);
  std::vector<AuditRow> audit;
  for (const auto& row : sql.rows("SELECT chat_id::text, old_value, new_value, at_epoch::text, backend_pid::text, "
                                  "statement_timeout, query FROM chaos_marker_audit ORDER BY seq")) {
    AuditRow a;
    a.chatId = *row[0];
    a.oldValue = row[1];
    a.newValue = row[2];
    a.at = std::stod(*row[3]);
    a.pid = *row[4];
    a.statementTimeout = *row[5];
    a.query = row[6].value_or("");
    a.repair = a.query.find("unnest(") != std::string::npos;
    audit.push_back(std::move(a));
  }
  std::vector<Violation> violations;
  std::size_t repairs = 0, workerClears = 0;
  for (const auto& a : audit) {
    const auto& value = a.newValue ? a.newValue : a.oldValue;
    const auto found = value ? streamIndex.find(*value) : streamIndex.end();
    if (found == streamIndex.end() || (a.oldValue && a.newValue) || workers[found->second].chatId != a.chatId) {
      violations.push_back({2, "unexpected marker change on chat " + a.chatId + ": " + a.oldValue.value_or("NULL") +
                                   " -> " + a.newValue.value_or("NULL") + " by: " + a.query});
      continue;
    }
    auto& w = workers[found->second];
    if (a.newValue) {
      w.writeAt = a.at;
    } else if (a.repair) {
      ++repairs;
      w.repairAt = std::min(w.repairAt, a.at);
    } else {
      ++workerClears;
      w.workerClearAt = std::min(w.workerClearAt, a.at);
    }
  }

  // ---- lock events ----
  std::size_t lockEvents = lockEventList.size();
  std::vector<double> lastHeld(workers.size(), 0);
  for (const auto& e : lockEventList) {
    auto& w = workers[e.chat];
    if (e.kind == 's' || e.kind == 'e') {
      if (lastHeld[e.chat] > 0) w.maxHeartbeatGap = std::max(w.maxHeartbeatGap, e.at - lastHeld[e.chat]);
      lastHeld[e.chat] = e.at;
      w.lastExtendAt = e.at;
    }
    if (e.kind == 'x') w.firstExpiredAt = std::min(w.firstExpiredAt, e.at);
  }

  // ---- classify the workers ----
  std::size_t killed = 0, completed = 0, lost = 0, unexpected = 0;
  std::string unexpectedText;
  for (auto& w : workers) {
    const bool orphaned = w.killSent && w.killedBySigkill && w.workerClearAt == kInfinity;
    // A lock that expired while its worker lived (a heartbeat that fell behind): the lock was lost.
    w.lost = w.reportedLost || w.exitCode == 4 || w.firstExpiredAt < (w.killSent ? w.killAt : w.deadAt);
    if (w.lost) ++lost;
    if (orphaned) {
      ++killed;
    } else if (!w.killSent && w.exitCode == 0 && w.reportedCleared && w.workerClearAt < kInfinity) {
      ++completed;
    } else {
      ++unexpected;
      unexpectedText += "stream " + w.streamId + ": exit " + std::to_string(w.exitCode) +
                        (w.killSent ? " (kill sent)" : "") + ", output:";
      for (const auto& line : w.tail) unexpectedText += "\n    " + line;
      unexpectedText += "\n";
    }
  }

  // ---- the reads ----
  std::vector<const Read*> reads;
  for (const auto& slot : readers.results) {
    for (const auto& sample : slot) reads.push_back(&sample);
  }
  std::sort(reads.begin(), reads.end(), [](const Read* a, const Read* b) { return a->start < b->start; });
  std::vector<double> latencies;
  std::size_t failedReads = 0;
  for (const auto* r : reads) {
    latencies.push_back(r->end - r->start);
    if (r->status != 200) {
      ++failedReads;
      if (failedReads <= 5) {
        violations.push_back({4, "a read at +" + std::to_string(r->start - testStart) + " s answered " +
                                     std::to_string(r->status)});
      }
    }
  }
  double maxReadGap = 0;
  for (std::size_t i = 1; i < reads.size(); ++i) maxReadGap = std::max(maxReadGap, reads[i]->start - reads[i - 1]->start);

  // Check 1: from the marker's commit (as seen by the test) to the worker's own clear (its trigger
  // time, before the commit) or to the kill, every read must report the stream active, with its id.
  std::size_t check1Pairs = 0, check1Violations = 0, otherIdViolations = 0;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const auto& w = workers[i];
    if (w.markerAt == 0 || w.lost) continue;
    double holdEnd = std::min({w.killSent ? w.killAt : kInfinity, w.workerClearAt, w.repairAt});
    for (const auto* r : reads) {
      if (r->start <= w.markerAt || r->end >= holdEnd || r->status != 200) continue;
      ++check1Pairs;
      if (r->states[i] != kOwnStream) {
        ++check1Violations;
        if (check1Violations <= 5) {
          violations.push_back({1, "stream " + w.streamId + " held its lock but a read at +" +
                                       std::to_string(r->start - testStart) + " s reported it " +
                                       (r->states[i] == kInactive ? "inactive" : "with another id or not at all")});
        }
      }
    }
    // Any read: an active id must be the chat's own stream's.
    for (const auto* r : reads) {
      if (r->status == 200 && (r->states[i] == kOtherId || r->states[i] == kMissing)) ++otherIdViolations;
    }
  }
  if (otherIdViolations > 0) {
    violations.push_back({1, std::to_string(otherIdViolations) + " chat reads showed a foreign id or missed the chat"});
  }

  // Check 2: a repair may clear only the marker of a stream whose worker had been killed (or
  // had lost its lock); every stream that ran to its end cleared its own marker.
  std::size_t check2Violations = 0;
  std::vector<double> killToRepair;
  for (const auto& w : workers) {
    if (w.repairAt < kInfinity) {
      if (w.killSent && w.repairAt >= w.killAt) {
        killToRepair.push_back(w.repairAt - w.killAt);
      } else if (!w.lost) {
        ++check2Violations;
        violations.push_back({2, "the repair cleared the marker of live stream " + w.streamId + " at +" +
                                     std::to_string(w.repairAt - testStart) + " s"});
      }
    }
    if (!w.killSent && w.writeAt > 0 && w.workerClearAt == kInfinity) {
      ++check2Violations;
      violations.push_back({2, "stream " + w.streamId + " ran to its end but did not clear its own marker"});
    }
  }

  // Check 3: every read that starts a TTL after an orphaning worker's death reports it inactive
  // (and there is such a read); the marker is repaired in the database. The lock expires a TTL
  // after its last extend ran in Redis, which is before both the worker's reaping and the receipt
  // of that extend's keyspace event (an extend still in flight at the kill is covered too).
  std::size_t check3Violations = 0, check3Pairs = 0;
  std::vector<double> killToInactive, expiryToInactive, killToExpiry;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const auto& w = workers[i];
    if (!(w.killSent && w.killedBySigkill && w.workerClearAt == kInfinity)) continue;
    const double deadline = std::max(w.deadAt, w.lastExtendAt) + ttl + kExpirySlackS;
    std::size_t after = 0;
    double firstInactiveEnd = kInfinity;
    for (const auto* r : reads) {
      if (r->status != 200) continue;
      if (r->start >= w.killAt && r->states[i] == kInactive) firstInactiveEnd = std::min(firstInactiveEnd, r->end);
      if (r->start < deadline) continue;
      ++after;
      ++check3Pairs;
      if (r->states[i] != kInactive) {
        ++check3Violations;
        if (check3Violations <= 5) {
          violations.push_back({3, "orphaned stream " + w.streamId + " still reported active by a read at +" +
                                       std::to_string(r->start - testStart) + " s (" +
                                       std::to_string(r->start - w.deadAt) + " s after its death)"});
        }
      }
    }
    if (after == 0) {
      ++check3Violations;
      violations.push_back({3, "no read started after the lock TTL of orphaned stream " + w.streamId});
    }
    if (firstInactiveEnd < kInfinity) killToInactive.push_back(firstInactiveEnd - w.killAt);
    if (w.firstExpiredAt < kInfinity) {
      killToExpiry.push_back(w.firstExpiredAt - w.killAt);
      if (firstInactiveEnd < kInfinity) expiryToInactive.push_back(firstInactiveEnd - w.firstExpiredAt);
    }
    if (w.repairAt == kInfinity) {
      ++check3Violations;
      violations.push_back({3, "the marker of orphaned stream " + w.streamId + " was never repaired"});
    }
  }
  const auto stuck = sql.rows("SELECT id::text, conversation_id FROM copilot_chats WHERE conversation_id IS NOT NULL");
  for (const auto& row : stuck) {
    ++check3Violations;
    violations.push_back({3, "chat " + *row[0] + " still has marker " + *row[1] + " at the end"});
  }

  // The server's own view: every lookup verified, repairs counted, nothing but 200 on the chat routes.
  const double lookupsUnknown = metric(metricsText, "streamlock_lookups_total{status=\"unknown\"}");
  const double lookupsVerified = metric(metricsText, "streamlock_lookups_total{status=\"verified\"}");
  const double markersRepaired = metric(metricsText, "streamlock_markers_repaired_total");
  const double repairFailures = metric(metricsText, "streamlock_repair_failures_total");
  const double serverFailed = failedChatRequests(metricsText);
  if (serverFailed != 0) violations.push_back({4, "the server counted non-200 answers on the chat routes"});

  // Redis: no lock of this test's chats left behind. Only those: on the shared cluster other tests
  // run at the same time (ctest -j2) and may hold locks of their own chats.
  std::unordered_set<std::string> ownLockKeys;
  for (const auto& w : workers) ownLockKeys.insert(std::string{"copilot:chat-stream-lock:"} + w.chatId);
  std::size_t locksLeft = 0;
  std::string locksLeftText;
  for (const int port : target.ports) {
    redisContext* probe = connectRedis(port);
    auto* keys = runRedis(probe, {"KEYS", "copilot:chat-stream-lock:*"});
    for (std::size_t k = 0; k < keys->elements; ++k) {
      const std::string key{keys->element[k]->str, keys->element[k]->len};
      if (ownLockKeys.count(key) == 0) continue;
      ++locksLeft;
      std::string expiry;
      try {  // a cluster replica answers MOVED: the master's line has the TTL
        auto* pttl = runRedis(probe, {"PTTL", key});
        expiry = "PTTL " + std::to_string(pttl->integer) + " ms";
        freeReplyObject(pttl);
      } catch (const std::exception& e) {
        expiry = e.what();
      }
      locksLeftText += "  left on port " + std::to_string(port) + ": " + key + " (" + expiry + ")\n";
    }
    freeReplyObject(keys);
    redisFree(probe);
  }

  auto count = [&](int check) {
    return static_cast<std::size_t>(std::count_if(violations.begin(), violations.end(),
                                                  [check](const Violation& v) { return v.check == check; }));
  };
  auto maxOf = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  auto minOf = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); };
  double maxGap = 0;
  for (const auto& w : workers) maxGap = std::max(maxGap, w.maxHeartbeatGap);
  const std::size_t v1 = check1Violations + (otherIdViolations > 0 ? 1 : 0);
  const std::size_t v2 = count(2);  // check2Violations plus any unexpected marker change
  const std::size_t v3 = check3Violations;
  const std::size_t v4 = failedReads + (serverFailed != 0 ? 1 : 0);
  const double seconds = testEnd - testStart;

  std::printf("\n==== chaos kill -9: figures (seed %llu) ====\n", static_cast<unsigned long long>(settings.seed));
  std::printf("streams                 %zu in %zu chats, lock TTL %ld s, durations 3..%ld s, run %.1f s\n",
              workers.size(), workers.size(), settings.ttlS, maxDurationS, seconds);
  std::printf("killed mid-stream       %zu (SIGKILL, %.0f%%), completed %zu, lock lost %zu, unexpected %zu\n", killed,
              100.0 * static_cast<double>(killed) / static_cast<double>(workers.size()), completed, lost, unexpected);
  std::printf("reads                   %zu by %zu readers (%.0f/s), latency p50 %.1f ms, p99 %.1f ms, max %.1f ms, "
              "max gap between read starts %.1f ms\n",
              reads.size(), settings.readers, static_cast<double>(reads.size()) / seconds,
              1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.99), 1000 * maxOf(latencies),
              1000 * maxReadGap);
  std::printf("lookups (server)        verified %.0f, unknown %.0f\n", lookupsVerified, lookupsUnknown);
  std::printf("marker changes          %zu: %zu writes, %zu cleared by their worker, %zu repairs "
              "(server counted %.0f repaired, %.0f repair failures)\n",
              audit.size(), audit.size() - repairs - workerClears, workerClears, repairs, markersRepaired,
              repairFailures);
  std::printf("lock events (Redis)     %zu, max gap between extends of a held lock %.2f s (heartbeat %.2f s)\n",
              lockEvents, maxGap, ttl / 3);
  std::printf("kill -> lock expired    min %.2f s, max %.2f s (TTL %ld s)\n", minOf(killToExpiry), maxOf(killToExpiry),
              settings.ttlS);
  std::printf("kill -> inactive        min %.2f s, max %.2f s (bound: TTL + one read)\n", minOf(killToInactive),
              maxOf(killToInactive));
  std::printf("expired -> inactive     max %.3f s\n", maxOf(expiryToInactive));
  std::printf("kill -> repaired        min %.2f s, max %.2f s\n", minOf(killToRepair), maxOf(killToRepair));
  std::printf("locks left in Redis     %zu\n%s", locksLeft, locksLeftText.c_str());
  std::printf("check 1 lock holder never reported inactive     %zu violations (%zu read x stream pairs checked)\n",
              v1, check1Pairs);
  std::printf("check 2 no repair of a live stream's marker     %zu violations (%zu repairs checked)\n", v2, repairs);
  std::printf("check 3 orphan inactive within TTL + one read   %zu violations (%zu read x stream pairs checked)\n",
              v3, check3Pairs);
  std::printf("check 4 every request answered 200              %zu violations (%zu reads)\n", v4, reads.size());
  for (const auto& v : violations) std::printf("  violation (check %d): %s\n", v.check, v.text.c_str());
  if (!unexpectedText.empty()) std::printf("unexpected workers:\n%s", unexpectedText.c_str());
  std::printf("wall time %.1f s\n", wallNow() - testStart);
  std::fflush(stdout);

  CHECK(unexpected == 0);
  CHECK(lost == 0);
  CHECK(killed == plannedKills);
  CHECK(lookupsUnknown == 0);
  CHECK(locksLeft == 0);
  CHECK(markersRepaired == static_cast<double>(repairs));
  CHECK(v1 == 0);
  CHECK(v2 == 0);
  CHECK(v3 == 0);
  CHECK(v4 == 0);
}

}  // namespace
