// The fault matrix of mothership_server against real servers: Redis refusing connections, paused
// (SIGSTOP), restarted, slow (DEBUG SLEEP) or answering with an error reply; PostgreSQL with the
// repair blocked by a row lock, a statement held past its deadline, more concurrent requests than
// pooled connections, and the cluster stopped and started again ([pg-stop], run serially).
//
// Redis trouble must never turn into an error status: 200 with the markers preserved, each within
// the Redis deadline, nothing repaired, the breaker opening (counted, not timed), and the first
// read after the cool-down verified again without a server restart. Timing assertions are only
// generous bounds that prove nothing hangs.

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>

#include "harness.h"

using namespace servertest;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kChats = "/api/mothership/chats";
// No read may take this long while a dependency misbehaves: the deadlines are 250 ms (Redis) and
// the PostgreSQL deadline the test sets; this only proves that nothing hangs.
constexpr milliseconds kNoHang{2000};

// ---- Redis, talked to directly ----

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
struct RedisContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
using ReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;
using ContextPtr = std::unique_ptr<redisContext, RedisContextDeleter>;

timeval toTimeval(milliseconds timeout) {
  return timeval{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
}

// A connection to 127.0.0.1:port as the default user; nullptr when it cannot connect.
ContextPtr connectRedis(int port, milliseconds timeout) {
  ContextPtr context(redisConnectWithTimeout("127.0.0.1", port, toTimeval(timeout)));
  if (!context || context->err != 0) return nullptr;
  redisSetTimeout(context.get(), toTimeval(timeout));
  return context;
}

// One command; nullptr on a connection failure or timeout (an error reply is returned as is).
ReplyPtr redisRun(redisContext* context, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const auto& arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  return ReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data())));
}

// Runs a setup command on a fresh connection; throws unless it succeeds.
void redisSetup(int port, const std::vector<std::string>& args) {
  auto context = connectRedis(port, milliseconds{2000});
  if (!context) throw std::runtime_error("cannot connect to the test redis-server");
  const auto reply = redisRun(context.get(), args);
  if (!reply || reply->type == REDIS_REPLY_ERROR) {
    throw std::runtime_error("Redis setup command " + args.front() + " failed" +
                             (reply ? ": " + std::string(reply->str, reply->len) : std::string()));
  }
}

// Whether Redis answers PING within `timeout` (false while it is paused, asleep or down).
bool redisAnswers(int port, milliseconds timeout) {
  auto context = connectRedis(port, timeout);
  if (!context) return false;
  const auto reply = redisRun(context.get(), {"PING"});
  return reply && reply->type == REDIS_REPLY_STATUS && std::string(reply->str, reply->len) == "PONG";
}

// The process id of the redis-server answering on port, or -1.
long long answeringPid(int port) {
  auto context = connectRedis(port, milliseconds{200});
  if (!context) return -1;
  const auto reply = redisRun(context.get(), {"INFO", "server"});
  if (!reply || reply->type != REDIS_REPLY_STRING) return -1;
  const std::string info(reply->str, reply->len);
  const std::string field = "process_id:";
  const auto at = info.find(field);
  return at == std::string::npos ? -1 : std::stoll(info.substr(at + field.size()));
}

// A redis-server of this test's own that can be paused, killed and started again on its port.
class FaultRedis {
 public:
  explicit FaultRedis(std::vector<std::string> extraArgs = {}) : extraArgs_(std::move(extraArgs)) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = freePort();
      if (spawn()) return;
    }
    throw std::runtime_error("cannot start a private redis-server");
  }
  ~FaultRedis() { kill(); }
  FaultRedis(const FaultRedis&) = delete;
  FaultRedis& operator=(const FaultRedis&) = delete;

  int port() const { return port_; }
  // redis://[userinfo@]127.0.0.1:<port>/0
  std::string url(const std::string& userinfo = {}) const {
    return "redis://" + (userinfo.empty() ? "" : userinfo + "@") + "127.0.0.1:" + std::to_string(port_) + "/0";
  }
  void pause() { process_->signal(SIGSTOP); }
  void resume() { process_->signal(SIGCONT); }
  void kill() {
    if (!process_) return;
    process_->signal(SIGKILL);  // also ends a stopped process
    process_->wait(seconds{10});
    process_.reset();
  }
  // Starts it again on the same port (with an empty data set: nothing is persisted).
  void start() {
    if (process_) throw std::runtime_error("the private redis-server is running");
    if (!spawn()) throw std::runtime_error("cannot restart the private redis-server on its port");
  }

 private:
  bool spawn() {
    std::vector<std::string> argv{requireEnv("STREAMLOCK_TEST_REDIS_SERVER"), "--port", std::to_string(port_),
                                  "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--enable-debug-command", "local", "--loglevel", "warning"};
    argv.insert(argv.end(), extraArgs_.begin(), extraArgs_.end());
    auto process = std::make_unique<Subprocess>(argv);
    const pid_t pid = process->pid();
    // Another process may have taken the port: only our own server counts.
    const bool up = eventually([&] { return !process->running() || answeringPid(port_) == pid; }, seconds{10});
    if (!up || !process->running()) return false;
    process_ = std::move(process);
    return true;
  }

  std::vector<std::string> extraArgs_;
  int port_ = 0;
  std::unique_ptr<Subprocess> process_;
};

// ---- HTTP ----

// Joins its threads however the scope ends (a std::thread destroyed unjoined would terminate).
struct Threads {
  std::vector<std::thread> threads;
  ~Threads() {
    for (auto& thread : threads) {
      if (thread.joinable()) thread.join();
    }
  }
};

struct Timed {
  Response response;
  milliseconds elapsed{0};
};

Timed timedGet(const Server& server, const std::string& path, const std::optional<std::string>& token = {}) {
  const auto start = Clock::now();
  Timed out;
  out.response = server.get(path, token);
  out.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  return out;
}

// `count` GETs of `path` at once, each on its own connection; results in order.
std::vector<Timed> concurrentGets(const Server& server, const std::string& path, const std::string& token,
                                  int count) {
  std::vector<Timed> results(static_cast<std::size_t>(count));
  {
    Threads threads;
    for (int i = 0; i < count; ++i) {
      threads.threads.emplace_back([&, i] { results[static_cast<std::size_t>(i)] = timedGet(server, path, token); });
    }
  }
  return results;
}

Json activeStreamIdIn(const Json& list, const std::string& chatId) {
  for (const auto& chat : list["data"]) {
    if (chat["id"] == chatId) return chat["activeStreamId"];
  }
  throw std::runtime_error("chat " + chatId + " is not in the list");
}

// The value of one series of /metrics ("name" or "name{labels}"); 0 when absent.
std::uint64_t metric(const std::string& text, const std::string& series) {
  const std::string prefix = series + " ";
  std::size_t at = text.rfind('\n' + prefix);
  if (at != std::string::npos) {
    ++at;
  } else if (text.compare(0, prefix.size(), prefix) == 0) {
    at = 0;
  } else {
    return 0;
  }
  return std::stoull(text.substr(at + prefix.size(), text.find('\n', at) - at - prefix.size()));
}

struct Counts {
  std::uint64_t verified = 0, unknown = 0, redisErrors = 0, opened = 0, shortCircuits = 0, repaired = 0,
                repairFailures = 0;
};

Counts counts(const Server& server) {
  const auto response = server.get("/metrics");
  if (response.status != 200) throw std::runtime_error("GET /metrics failed");
  const auto& text = response.body;
  Counts c;
  c.verified = metric(text, "streamlock_lookups_total{status=\"verified\"}");
  c.unknown = metric(text, "streamlock_lookups_total{status=\"unknown\"}");
  c.redisErrors = metric(text, "streamlock_redis_errors_total");
  c.opened = metric(text, "streamlock_breaker_opened_total");
  c.shortCircuits = metric(text, "streamlock_breaker_short_circuits_total");
  c.repaired = metric(text, "streamlock_markers_repaired_total");
  c.repairFailures = metric(text, "streamlock_repair_failures_total");
  return c;
}

// The chats of one caller: "live" has a marker and (while Redis holds it) a lock with that owner,
// "stale" a marker without a lock, "idle" no marker.
struct Chats {
  Sql& sql = TestDatabase::get().sql();
  Seed seed{sql};
  Caller caller = newCaller(seed);
  std::string live = seed.chat(caller.userId, caller.workspaceId, "live");
  std::string stale = seed.chat(caller.userId, caller.workspaceId, "stale");
  std::string idle = seed.chat(caller.userId, caller.workspaceId, "idle");

  Chats() {
    seed.setMarker(live, "stream-live");
    seed.setMarker(stale, "stream-stale");
  }
  std::string list() const { return chatListPath(caller.workspaceId); }
  std::string single(const std::string& chatId) const { return kChats + "/" + chatId; }
};

// Reads while Redis cannot answer: each 200 within kNoHang, every marker as stored (status
// unknown), nothing repaired. Returns how many lookups the reads made.
int expectMarkersPreserved(const Server& server, Chats& chats, int rounds) {
  int lookups = 0;
  for (int round = 0; round < rounds; ++round) {
    const auto list = timedGet(server, chats.list(), chats.caller.token);
    ++lookups;
    REQUIRE(list.response.status == 200);
    CHECK(list.elapsed < kNoHang);
    const auto json = list.response.json();
    CHECK(activeStreamIdIn(json, chats.live) == "stream-live");
    CHECK(activeStreamIdIn(json, chats.stale) == "stream-stale");
    CHECK(activeStreamIdIn(json, chats.idle).is_null());
  }
  const auto chat = timedGet(server, chats.single(chats.stale), chats.caller.token);
  ++lookups;
  REQUIRE(chat.response.status == 200);
  CHECK(chat.elapsed < kNoHang);
  CHECK(chat.response.json()["chat"]["activeStreamId"] == "stream-stale");
  // Unknown is never repaired: the marker of the chat without a lock is still there.
  CHECK(chats.seed.marker(chats.stale) == std::optional<std::string>("stream-stale"));
  return lookups;
}

// Reads until /healthz shows the breaker open (reads while it is half-open probe and fail again, so
// this holds once the probe has failed). Returns whether it did.
bool readUntilBreakerOpen(const Server& server, const Chats& chats) {
  return eventually(
      [&] {
        if (server.get(chats.list(), chats.caller.token).status != 200) return false;
        const auto health = server.get("/healthz");
        return health.status == 200 && health.json()["breaker"] == "open" && health.json()["redis"] == "unknown";
      },
      seconds{10});
}

// The breaker's bookkeeping of an outage: it opened, and lookups were answered without asking
// Redis. Every unknown lookup either failed at Redis or was short-circuited, and fewer failed at
// Redis than were made: the outage cost a few deadlines, not one per read.
void expectBreakerOpened(const Counts& before, const Counts& after) {
  const auto unknown = after.unknown - before.unknown;
  const auto failed = after.redisErrors - before.redisErrors;
  const auto shortCircuits = after.shortCircuits - before.shortCircuits;
  CHECK(after.opened - before.opened >= 1);
  CHECK(shortCircuits >= 1);
  CHECK(failed >= 1);
  CHECK(failed < unknown);
  CHECK(failed + shortCircuits == unknown);
  CHECK(after.repaired == before.repaired);
}

// Redis answers again: wait (polling /healthz, which never probes) until the cool-down is over;
// then the very next read is verified: the stale marker reported inactive and repaired, the live
// lock's owner reported. Afterwards the breaker is closed, and the server was never restarted.
void expectVerifiedAfterCoolDown(Server& server, Chats& chats) {
  REQUIRE(eventually([&] { return server.get("/healthz").json()["breaker"] != "open"; }, seconds{10}));
  const auto verifiedBefore = counts(server).verified;
  const auto list = timedGet(server, chats.list(), chats.caller.token);
  REQUIRE(list.response.status == 200);
  CHECK(list.elapsed < kNoHang);
  const auto json = list.response.json();
  CHECK(activeStreamIdIn(json, chats.stale).is_null());
  CHECK(activeStreamIdIn(json, chats.live) == "stream-live");
  CHECK(activeStreamIdIn(json, chats.idle).is_null());
  CHECK(chats.seed.marker(chats.stale) == std::nullopt);
  CHECK(chats.seed.marker(chats.live) == std::optional<std::string>("stream-live"));
  CHECK(counts(server).verified == verifiedBefore + 1);

  const auto health = server.get("/healthz");
  CHECK(health.status == 200);
  CHECK(health.json()["breaker"] == "closed");
  CHECK(health.json()["redis"] == "verified");
  CHECK(server.process().running());
}

// Runs `command` (a tests/run.sh STREAMLOCK_TEST_PG_* shell command); its exit status.
int runShell(const std::string& command) {
  const int status = std::system(command.c_str());
  return status == -1 ? -1 : WEXITSTATUS(status);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Redis faults
// ---------------------------------------------------------------------------------------------

TEST_CASE("Redis refusing connections (closed port from the start): 200 with markers preserved, then verified",
          "[server][faults][redis]") {
  FaultRedis redis;
  redis.kill();  // its port now refuses connections, before the server ever reached it
  Server server({"--redis-url", redis.url()});
  Chats chats;

  const auto before = counts(server);
  expectMarkersPreserved(server, chats, 6);
  REQUIRE(readUntilBreakerOpen(server, chats));
  expectMarkersPreserved(server, chats, 2);
  expectBreakerOpened(before, counts(server));
  const auto health = server.get("/healthz");
  CHECK(health.status == 200);  // Redis down is not PostgreSQL down

  redis.start();
  redisSetup(redis.port(), {"SET", lockKey(chats.live), "stream-live", "EX", "60"});
  expectVerifiedAfterCoolDown(server, chats);
}

TEST_CASE("Redis killed under a running server, then restarted on the same port", "[server][faults][redis]") {
  FaultRedis redis;
  Server server({"--redis-url", redis.url()});
  Chats chats;
  redisSetup(redis.port(), {"SET", lockKey(chats.live), "stream-live", "EX", "60"});
  // Verified while Redis is up: this also leaves pooled connections that the kill breaks.
  const auto up = server.get(chats.list(), chats.caller.token);
  REQUIRE(up.status == 200);
  REQUIRE(activeStreamIdIn(up.json(), chats.stale).is_null());
  chats.seed.setMarker(chats.stale, "stream-stale");  // stuck again, for the outage

  redis.kill();
  const auto before = counts(server);
  expectMarkersPreserved(server, chats, 6);
  REQUIRE(readUntilBreakerOpen(server, chats));
  expectBreakerOpened(before, counts(server));

  redis.start();  // empty: the lock of the live chat has to be taken again
  redisSetup(redis.port(), {"SET", lockKey(chats.live), "stream-live", "EX", "60"});
  expectVerifiedAfterCoolDown(server, chats);
}

TEST_CASE("Redis paused with SIGSTOP: reads and a concurrent burst answer 200 within the deadline, "
          "then verified after SIGCONT",
          "[server][faults][redis]") {
  FaultRedis redis;
  Server server({"--redis-url", redis.url(), "--threads", "32"});
  Chats chats;
  redisSetup(redis.port(), {"SET", lockKey(chats.live), "stream-live", "EX", "60"});
  REQUIRE(server.get(chats.list(), chats.caller.token).status == 200);  // a pooled connection to break
  chats.seed.setMarker(chats.stale, "stream-stale");

  redis.pause();
  const auto before = counts(server);
  // A burst at once: the lookups that reach the paused server each cost one deadline, together.
  const auto burstStart = Clock::now();
  const auto burst = concurrentGets(server, chats.list(), chats.caller.token, 8);
  const auto burstTime = Clock::now() - burstStart;
  expectMarkersPreserved(server, chats, 6);
  const bool opened = readUntilBreakerOpen(server, chats);
  const auto after = counts(server);
  const auto health = timedGet(server, "/healthz");  // open breaker: no PING to the paused server
  redis.resume();

  for (const auto& result : burst) {
    REQUIRE(result.response.status == 200);
    CHECK(result.elapsed < kNoHang);
    CHECK(activeStreamIdIn(result.response.json(), chats.stale) == "stream-stale");
  }
  CHECK(burstTime < kNoHang);
  REQUIRE(opened);
  expectBreakerOpened(before, after);
  CHECK(health.response.status == 200);
  CHECK(health.elapsed < kNoHang);
  CHECK(chats.seed.marker(chats.stale) == std::optional<std::string>("stream-stale"));

  expectVerifiedAfterCoolDown(server, chats);
}

TEST_CASE("Redis slow (DEBUG SLEEP on another connection): 200 within the deadline, nothing repaired, "
          "then verified",
          "[server][faults][redis]") {
  FaultRedis redis;
  Server server({"--redis-url", redis.url()});
  Chats chats;
  redisSetup(redis.port(), {"SET", lockKey(chats.live), "stream-live", "EX", "60"});
  REQUIRE(server.get(chats.list(), chats.caller.token).status == 200);
  chats.seed.setMarker(chats.stale, "stream-stale");

  // Redis is single-threaded: while one connection sleeps, nobody is answered.
  std::atomic<bool> sleepAnswered{false};
  Threads sleeper;
  sleeper.threads.emplace_back([&] {
    auto context = connectRedis(redis.port(), milliseconds{10000});
    if (!context) return;
    const auto reply = redisRun(context.get(), {"DEBUG", "SLEEP", "3"});
    sleepAnswered = reply && reply->type == REDIS_REPLY_STATUS;
  });
  const bool asleep = eventually([&] { return !redisAnswers(redis.port(), milliseconds{300}); }, seconds{5});
  const auto before = counts(server);
  int lookups = 0;
  if (asleep) lookups = expectMarkersPreserved(server, chats, 4);
  const auto after = counts(server);
  sleeper.threads.front().join();

  REQUIRE(asleep);
  REQUIRE(sleepAnswered);
  // Each read that reached Redis timed out; the third opened the breaker.
  CHECK(after.unknown - before.unknown == static_cast<std::uint64_t>(lookups));
  CHECK(after.opened - before.opened == 1);
  CHECK(after.shortCircuits - before.shortCircuits >= 1);
  CHECK(after.repaired == before.repaired);

  expectVerifiedAfterCoolDown(server, chats);
}

TEST_CASE("Redis answering with an error reply (an ACL user without MGET): 200 with markers preserved, "
          "then verified once MGET is allowed",
          "[server][faults][redis]") {
  FaultRedis redis;
  redisSetup(redis.port(), {"ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-mget"});
  Server server({"--redis-url", redis.url("limited:pw")});
  Chats chats;
  redisSetup(redis.port(), {"SET", lockKey(chats.live), "stream-live", "EX", "60"});

  const auto before = counts(server);
  expectMarkersPreserved(server, chats, 6);
  REQUIRE(readUntilBreakerOpen(server, chats));
  expectBreakerOpened(before, counts(server));
  CHECK(server.process().stderrText().find("pw@") == std::string::npos);  // no password in the log

  redisSetup(redis.port(), {"ACL", "SETUSER", "limited", "+mget"});
  expectVerifiedAfterCoolDown(server, chats);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL faults
// ---------------------------------------------------------------------------------------------

TEST_CASE("the repair blocked by a row lock: 200 inactive, the marker kept while locked, repaired by a later read",
          "[server][faults][postgres]") {
  Server server(sharedRedisFlags());
  Chats chats;
  const auto& conninfo = TestDatabase::get().conninfo();

  // Another transaction holds the stale chat's row: the repair's UPDATE waits for it.
  Sql locker(conninfo);
  locker.exec("BEGIN");
  locker.exec("SELECT id FROM copilot_chats WHERE id = $1::uuid FOR UPDATE", {chats.stale});
  const auto before = counts(server);
  const auto list = timedGet(server, chats.list(), chats.caller.token);
  const auto chat = timedGet(server, chats.single(chats.stale), chats.caller.token);
  const auto markerWhileLocked = chats.seed.marker(chats.stale);
  const auto whileLocked = counts(server);
  locker.exec("ROLLBACK");

  REQUIRE(list.response.status == 200);
  CHECK(list.elapsed < kNoHang);
  CHECK(activeStreamIdIn(list.response.json(), chats.stale).is_null());  // verified stale
  CHECK(activeStreamIdIn(list.response.json(), chats.idle).is_null());
  REQUIRE(chat.response.status == 200);
  CHECK(chat.elapsed < kNoHang);
  CHECK(chat.response.json()["chat"]["activeStreamId"].is_null());
  CHECK(markerWhileLocked == std::optional<std::string>("stream-stale"));
  CHECK(whileLocked.repairFailures - before.repairFailures == 2);
  CHECK(whileLocked.repaired == before.repaired);

  // The lock is gone: the next read repairs the marker.
  const auto after = server.get(chats.list(), chats.caller.token);
  REQUIRE(after.status == 200);
  CHECK(activeStreamIdIn(after.json(), chats.stale).is_null());
  CHECK(chats.seed.marker(chats.stale) == std::nullopt);
  CHECK(counts(server).repaired >= whileLocked.repaired + 1);
}

TEST_CASE("a statement held past the PostgreSQL deadline: 500 JSON within it, cancelled on the server, then 200",
          "[server][faults][postgres]") {
  { const Server schema; }  // creates the tables under the default deadline
  Chats chats;
  auto& database = TestDatabase::get();
  Server server({"--pg-timeout-ms", "1000", "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  REQUIRE(server.get(chats.list(), chats.caller.token).status == 200);

  Sql locker(database.conninfo());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
  const auto list = timedGet(server, chats.list(), chats.caller.token);
  const auto chat = timedGet(server, chats.single(chats.idle), chats.caller.token);
  const auto health = timedGet(server, "/healthz");  // SELECT 1 does not need the table
  // The timed-out statements were cancelled on the server, not left waiting behind the lock.
  const bool cancelled = eventually([&] { return waitingOnLocks(database.sql()) == 0; }, seconds{10});
  locker.exec("ROLLBACK");

  CHECK(list.response.status == 500);
  CHECK(list.response.body == R"({"error":"Failed to fetch chats"})");
  CHECK(list.elapsed < milliseconds{4000});  // its 1 s deadline, and no hang
  CHECK(chat.response.status == 500);
  CHECK(chat.response.body == R"({"error":"Failed to fetch chat"})");
  CHECK(chat.elapsed < milliseconds{4000});
  CHECK(health.response.status == 200);
  CHECK(cancelled);
  // The 500s came from the statement deadline, not from another failure.
  CHECK(server.process().stderrText().find("database failure (timeout)") != std::string::npos);

  CHECK(server.get(chats.list(), chats.caller.token).status == 200);
  CHECK(server.get(chats.single(chats.idle), chats.caller.token).status == 200);
}

TEST_CASE("more concurrent requests than pooled connections: a bounded wait, then 503 JSON, and all 200 after release",
          "[server][faults][postgres]") {
  // Two connections, both held by statements blocked behind a table lock; the statement deadline
  // is long enough that they only end when the lock goes. One statement per connection (with
  // pipelining, the two holders could share one: test_server_pipeline.cpp covers that).
  Server server({"--threads", "32", "--pg-pool-size", "2", "--pg-pipeline-depth", "1", "--pg-timeout-ms", "15000",
                 "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  Chats chats;
  auto& database = TestDatabase::get();
  REQUIRE(server.get(chats.list(), chats.caller.token).status == 200);

  Sql locker(database.conninfo());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
  std::vector<Timed> holders(2);
  Threads holding;
  for (auto& holder : holders) {
    holding.threads.emplace_back([&] { holder = timedGet(server, chats.list(), chats.caller.token); });
  }
  const bool bothWaiting = eventually([&] { return waitingOnLocks(database.sql()) >= 2; }, seconds{10});
  std::vector<Timed> crowd;
  if (bothWaiting) crowd = concurrentGets(server, chats.list(), chats.caller.token, 12);
  const auto metrics = server.get("/metrics").body;
  locker.exec("ROLLBACK");
  for (auto& thread : holding.threads) thread.join();

  REQUIRE(bothWaiting);
  for (const auto& result : crowd) {
    CHECK(result.response.status == 503);
    CHECK(result.response.body == R"({"error":"Service unavailable"})");
    CHECK(result.response.headers.find("Retry-After") != result.response.headers.end());
    CHECK(result.elapsed < milliseconds{6000});  // the pool wait is bounded (2 s by default)
  }
  CHECK(metric(metrics, R"(mothership_http_requests_total{route="/api/mothership/chats",status="503"})") == 12);
  for (const auto& holder : holders) CHECK(holder.response.status == 200);

  // Released: a burst larger than the pool is served, each request waiting its turn.
  const auto burst = concurrentGets(server, chats.list(), chats.caller.token, 16);
  for (const auto& result : burst) {
    CHECK(result.response.status == 200);
    CHECK(result.elapsed < milliseconds{6000});
  }
  CHECK(server.get(chats.single(chats.idle), chats.caller.token).status == 200);
}

// Stops the shared cluster: registered RUN_SERIAL (tests/server/CMakeLists.txt).
TEST_CASE("PostgreSQL stopped: every route fails fast, and the very first requests after the restart succeed",
          "[server][faults][pg-stop]") {
  Server server(sharedRedisFlags());
  Chats chats;
  REQUIRE(server.get(chats.list(), chats.caller.token).status == 200);  // pooled connections to break
  REQUIRE(server.get(chats.single(chats.idle), chats.caller.token).status == 200);
  chats.seed.setMarker(chats.stale, "stream-stale");

  const auto start = requireEnv("STREAMLOCK_TEST_PG_START");
  struct Restart {
    const std::string& start;
    bool stopped = false;
    ~Restart() {
      if (stopped) runShell(start);
    }
  } restart{start};
  restart.stopped = true;
  REQUIRE(runShell(requireEnv("STREAMLOCK_TEST_PG_STOP")) == 0);
  std::vector<Timed> down;
  for (int round = 0; round < 3; ++round) {
    down.push_back(timedGet(server, chats.list(), chats.caller.token));
    down.push_back(timedGet(server, chats.single(chats.idle), chats.caller.token));
  }
  const auto health = timedGet(server, "/healthz");
  const auto metrics = timedGet(server, "/metrics");
  REQUIRE(runShell(start) == 0);  // pg_ctl -w: accepting connections when it returns
  restart.stopped = false;

  for (std::size_t i = 0; i < down.size(); ++i) {
    CHECK(down[i].response.status == 500);
    CHECK(down[i].response.body ==
          (i % 2 == 0 ? R"({"error":"Failed to fetch chats"})" : R"({"error":"Failed to fetch chat"})"));
    CHECK(down[i].elapsed < milliseconds{5000});
  }
  CHECK(health.response.status == 503);
  CHECK(health.response.json()["postgres"] == "down");
  CHECK(health.elapsed < milliseconds{5000});
  CHECK(metrics.response.status == 200);

  // Not polled: the first request of each route after the restart succeeds.
  const auto list = server.get(chats.list(), chats.caller.token);
  REQUIRE(list.status == 200);
  CHECK(activeStreamIdIn(list.json(), chats.stale).is_null());
  CHECK(server.get(chats.single(chats.idle), chats.caller.token).status == 200);
  CHECK(server.get("/healthz").status == 200);
  // The repair has its own pool, also broken by the restart: a later read repairs at the latest.
  // (A fresh connection: the test's own one was broken by the restart too.)
  Sql fresh(TestDatabase::get().conninfo());
  Seed inspect(fresh);
  CHECK(eventually(
      [&] {
        server.get(chats.list(), chats.caller.token);
        return inspect.marker(chats.stale) == std::nullopt;
      },
      seconds{10}));
  CHECK(server.process().running());
}
