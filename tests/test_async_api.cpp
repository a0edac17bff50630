// The asynchronous API as a service on an event loop uses it: every blocking call has a completion
// form that returns at once, whose `done` runs exactly once, never inside the call that started it,
// within the blocking form's bound, on Options::executor if there is one, else on the library's one
// callback thread. After shutdown() nothing pending is lost, and later calls complete at once. A
// Client uses its I/O thread and at most one callback thread, nothing per call; concurrent callers
// share one pipelined Redis connection; destroying a StreamLock never waits on the network.
//
// Completions only record what they saw (Catch2's assertions are not thread-safe): the main thread
// asserts. Every wait is bounded, and a Watchdog ends the process should the library hang where
// the test cannot bound the wait itself (a blocking call, a destructor, shutdown()).
#define CATCH_CONFIG_ENABLE_ALL_STRINGMAKERS
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "watchdog.h"
#include "pg.h"
#include "redis_client.h"
#include "redis_server.h"
#include "streamlock/client.h"
#include "streamlock/error.h"

using streamlock::AcquireResult;
using streamlock::ActiveStreams;
using streamlock::Client;
using streamlock::Completion;
using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::LookupStatus;
using streamlock::MarkerCandidate;
using streamlock::MarkerState;
using streamlock::Options;
using streamlock::ReconcileOptions;
using streamlock::ReconcileResult;
using streamlock::ReleaseOutcome;
using streamlock::RepairResult;
using streamlock::Result;
using streamlock::StaleMarker;
using streamlock::StreamLock;
using Clock = std::chrono::steady_clock;
using Owners = std::unordered_map<std::string, std::string>;
using Value = std::optional<std::string>;
using namespace std::chrono_literals;
namespace test = streamlock::test;
using streamlock::test::threadsWithoutClient;
using streamlock::test::Watchdog;

namespace {

// Sanitizers slow everything down several times: time bounds that are about speed scale with it.
#if defined(__SANITIZE_THREAD__)
constexpr int kSlowdown = 10;
constexpr const char* kBuild = "TSan";
#elif defined(__SANITIZE_ADDRESS__)
constexpr int kSlowdown = 4;
constexpr const char* kBuild = "ASan";
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr int kSlowdown = 10;
constexpr const char* kBuild = "TSan";
#elif __has_feature(address_sanitizer)
constexpr int kSlowdown = 4;
constexpr const char* kBuild = "ASan";
#else
constexpr int kSlowdown = 1;
constexpr const char* kBuild = "plain";
#endif
#else
constexpr int kSlowdown = 1;
constexpr const char* kBuild = "plain";
#endif

// True on a thread while it is inside a call that initiates an asynchronous operation: a
// completion that sees it true ran inside the call that started it.
thread_local bool tInsideCall = false;

template <typename F>
void initiate(F&& call) {
  tInsideCall = true;
  call();
  tInsideCall = false;
}

// How one completion was called.
template <typename T>
struct Call {
  int times = 0;            // how often it was called (exactly once is the rule)
  bool insideCall = false;  // it ran inside its initiating call
  std::thread::id thread;   // where it ran (the first time)
  Clock::time_point at;     // when it ran (the first time)
  std::optional<T> value;   // what it was given (the first time)
};

// Records the completions of n calls. The state is shared with the completions, so that a late or
// repeated one never touches a test frame that is gone.
template <typename T>
class Calls {
 public:
  explicit Calls(std::size_t n = 1) : state_(std::make_shared<State>()) { state_->calls.resize(n); }

  Completion<T> completion(std::size_t i = 0) {
    return [state = state_, i](T value) {
      const bool inside = tInsideCall;
      const auto now = Clock::now();
      {
        const std::lock_guard<std::mutex> lock(state->mutex);
        Call<T>& call = state->calls.at(i);
        if (call.times++ == 0) {
          call.insideCall = inside;
          call.thread = std::this_thread::get_id();
          call.at = now;
          call.value.emplace(std::move(value));
          ++state->completed;
        }
        ++state->invocations;
      }
      state->changed.notify_all();
    };
  }

  // Waits until n calls completed; false when they did not within limit.
  bool waitForCompleted(std::size_t n, std::chrono::milliseconds limit) const {
    std::unique_lock<std::mutex> lock(state_->mutex);
    return state_->changed.wait_for(lock, limit, [&] { return state_->completed >= n; });
  }
  bool wait(std::chrono::milliseconds limit = 10s) const { return waitForCompleted(state_->calls.size(), limit); }

  std::size_t completed() const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->completed;
  }
  // Every call of every completion, repeats included.
  std::size_t invocations() const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->invocations;
  }
  int times(std::size_t i = 0) const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->calls.at(i).times;
  }
  // The record of call i, its value moved out.
  Call<T> take(std::size_t i = 0) {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    Call<T>& call = state_->calls.at(i);
    Call<T> out;
    out.times = call.times;
    out.insideCall = call.insideCall;
    out.thread = call.thread;
    out.at = call.at;
    out.value = std::move(call.value);
    return out;
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<Call<T>> calls;
    std::size_t completed = 0;
    std::size_t invocations = 0;
  };
  std::shared_ptr<State> state_;
};

// A host's event loop, as far as the library can tell: Options::executor queues each task here, and
// the test runs them (on the main thread) when it drains the queue. Must outlive the Client.
class HostLoop {
 public:
  streamlock::Executor executor() {
    return [this](std::function<void()> task) {
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        tasks_.push_back(std::move(task));
        ++posted_;
      }
      changed_.notify_all();
    };
  }
  // An executor that keeps a copy of the task and then throws (a host whose queue failed half-way).
  streamlock::Executor keepsAndThrows() {
    return [this](std::function<void()> task) {
      executor()(std::move(task));
      throw std::runtime_error("the host's queue is closing");
    };
  }

  // Waits until at least n tasks were posted in all.
  bool waitForPosted(std::size_t n, std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, limit, [&] { return posted_ >= n; });
  }
  std::size_t queued() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return tasks_.size();
  }
  std::size_t posted() const {
    const std::lock_guard<std::mutex> lock(mutex_);
    return posted_;
  }
  // Runs the queued tasks (and those they queue) on the calling thread; returns how many ran.
  std::size_t drain() {
    std::size_t ran = 0;
    for (;;) {
      std::function<void()> task;
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        if (tasks_.empty()) return ran;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
      ++ran;
    }
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::function<void()>> tasks_;
  std::size_t posted_ = 0;
};

// The largest thread count seen while cond is false (polled), up to limit; and whether cond held.
struct ThreadPeak {
  std::size_t peak = 0;
  bool reached = false;
};
ThreadPeak peakThreadsUntil(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  ThreadPeak result;
  const auto deadline = Clock::now() + limit;
  for (;;) {
    result.peak = std::max(result.peak, test::threadCount());
    if (cond()) {
      result.reached = true;
      return result;
    }
    if (Clock::now() >= deadline) return result;
    std::this_thread::sleep_for(1ms);
  }
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string describe(const std::optional<ErrorCode>& code) {
  return code ? std::string("Error(") + streamlock::toString(*code) + ")" : std::string("no error");
}

std::optional<ErrorCode> errorOf(const AcquireResult& result) {
  if (const Error* error = result.error()) return error->code();
  return std::nullopt;
}
std::optional<ErrorCode> errorOf(const Result<bool>& result) {
  if (const Error* error = result.error()) return error->code();
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// The headline: a hung Redis must not hold a caller on an event loop. 1,000 completion-form
// lookups from one thread against a SIGSTOPped Redis: each returns at once, all complete within the
// lookup deadline (plus a little), none inside its call, each exactly once, all unknown. Then, with
// Redis still hung, more calls and shutdown(): every pending completion is called by the time
// shutdown() returns. Calls after that complete at once, inline (there is no executor).

namespace {

constexpr std::size_t kBurst = 1000;     // completion-form lookups against the hung Redis
constexpr std::size_t kPending = 100;    // then issued right before shutdown()
constexpr std::size_t kAfter = 10;       // then issued after shutdown() returned

void headline(Options options) {
  const Watchdog watchdog("the headline", 120s);
  test::RedisServerProcess server;
  test::CapturedLog log;
  const auto prefix = test::uniquePrefix();
  options.redis.url = server.url();
  options.lock.keyPrefix = prefix;
  options.logger = log.logger();
  options.redis.lookupDeadline = 250ms;
  Client client(options);
  // The Client has its connection open; then Redis hangs: the kernel keeps accepting bytes, nothing
  // answers.
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified; }));
  server.pause();

  const auto caller = std::this_thread::get_id();
  Calls<ActiveStreams> calls(kBurst + kPending + kAfter);
  std::vector<std::vector<std::string>> arguments;
  for (std::size_t i = 0; i < kBurst + kPending + kAfter; ++i) {
    arguments.push_back({"chat-" + std::to_string(i)});
  }

  // 1. The burst: each call returns at once.
  std::vector<Clock::duration> durations;
  durations.reserve(kBurst);
  for (std::size_t i = 0; i < kBurst; ++i) {
    const auto start = Clock::now();
    initiate([&] { client.getActiveChatStreamIds(std::move(arguments[i]), calls.completion(i)); });
    durations.push_back(Clock::now() - start);
  }
  const auto lastCallReturned = Clock::now();
  const bool allCompleted = calls.waitForCompleted(kBurst, 10s);

  std::sort(durations.begin(), durations.end());
  const double p50 = ms(durations[kBurst / 2 - 1]);
  const double p99 = ms(durations[kBurst * 99 / 100 - 1]);
  const double slowest = ms(durations.back());
  Clock::time_point lastCompletion{};
  std::size_t insideCall = 0, onCaller = 0, notUnknown = 0, withOwners = 0;
  for (std::size_t i = 0; i < kBurst; ++i) {
    const Call<ActiveStreams> call = calls.take(i);
    if (call.times == 0) continue;
    lastCompletion = std::max(lastCompletion, call.at);
    if (call.insideCall) ++insideCall;
    if (call.thread == caller) ++onCaller;
    if (call.value->status != LookupStatus::Unknown) ++notUnknown;
    if (!call.value->owners.empty()) ++withOwners;
  }
  const auto completedWithin = lastCompletion - lastCallReturned;
  WARN(kBuild << " build: " << kBurst << " completion-form lookups on a hung Redis returned in p50 " << p50
              << " ms, p99 " << p99 << " ms, slowest " << slowest << " ms; the last completion came "
              << ms(completedWithin) << " ms after the last call returned (lookupDeadline 250 ms)");
  CHECK(p99 < 1.0 * kSlowdown);
  REQUIRE(allCompleted);
  CHECK(completedWithin <= (250ms + 500ms) * kSlowdown);
  CHECK(insideCall == 0);
  CHECK(onCaller == 0);
  CHECK(notUnknown == 0);
  CHECK(withOwners == 0);
  CHECK(calls.invocations() == kBurst);  // none twice

  // 2. Still hung: more calls, then shutdown(). Every one of them is completed by the time it returns.
  for (std::size_t i = kBurst; i < kBurst + kPending; ++i) {
    initiate([&] { client.getActiveChatStreamIds(std::move(arguments[i]), calls.completion(i)); });
  }
  const std::size_t completedBeforeShutdown = calls.completed();
  const auto shutdownStart = Clock::now();
  client.shutdown();
  const auto shutdownTook = Clock::now() - shutdownStart;
  const std::size_t completedAtShutdown = calls.completed();
  WARN(kPending - (completedBeforeShutdown - kBurst) << " of " << kPending
                                                    << " later calls had not completed when shutdown() began; it took "
                                                    << ms(shutdownTook) << " ms and left " << kBurst + kPending - completedAtShutdown
                                                    << " uncompleted");
  CHECK(completedAtShutdown == kBurst + kPending);
  CHECK(shutdownTook < 1500ms * kSlowdown);  // commandTimeout (1 s) at most, when it has locks to release
  for (std::size_t i = kBurst; i < kBurst + kPending; ++i) {
    const Call<ActiveStreams> call = calls.take(i);
    if (call.times == 0) continue;
    CHECK_FALSE(call.insideCall);
    CHECK(call.thread != caller);
    CHECK(call.value->status == LookupStatus::Unknown);
  }

  // 3. After shutdown() returned: complete at once with unknown, inline (no executor: the one
  //    documented exception to "never inside the call").
  for (std::size_t i = kBurst + kPending; i < kBurst + kPending + kAfter; ++i) {
    initiate([&] { client.getActiveChatStreamIds(std::move(arguments[i]), calls.completion(i)); });
    const Call<ActiveStreams> call = calls.take(i);
    REQUIRE(call.times == 1);
    CHECK(call.insideCall);
    CHECK(call.thread == caller);
    CHECK(call.value->status == LookupStatus::Unknown);
  }
  CHECK(calls.invocations() == kBurst + kPending + kAfter);
  server.resume();
}

}  // namespace

TEST_CASE("headline: 1,000 completion-form lookups on a hung Redis return at once, complete within the deadline, "
          "and none is lost at shutdown") {
  headline(Options{});
}

TEST_CASE("headline with the breaker disabled: every lookup reaches the hung Redis") {
  Options options;
  options.breaker.failureThreshold = 0;
  headline(options);
}

// ---------------------------------------------------------------------------------------------------
// Options::executor: the host's loop. Completions and ownership-lost callbacks run where the host
// runs its tasks (here: the main thread, when the test drains the queue), never on a library thread.

TEST_CASE("executor: completions and ownership-lost callbacks run only when the host drains its queue") {
  const Watchdog watchdog("executor: drained by the host", 60s);
  HostLoop host;
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  auto options = test::clientOptions(test::redisUrl(), log);
  options.executor = host.executor();
  options.lock.ttl = 2s;
  options.lock.heartbeatInterval = 100ms;
  Client client(options);
  const auto main = std::this_thread::get_id();
  redis.set(test::lockKey(options, "chat-0"), "stream-0");

  constexpr std::size_t n = 20;
  Calls<ActiveStreams> lookups(n);
  for (std::size_t i = 0; i < n; ++i) {
    initiate([&] { client.getActiveChatStreamIds({"chat-" + std::to_string(i)}, lookups.completion(i)); });
  }
  REQUIRE(host.waitForPosted(n, 10s));
  // The outcomes are known, and wait in the host's queue: nothing ran them.
  CHECK(lookups.completed() == 0);
  CHECK(host.queued() == n);

  CHECK(host.drain() == n);
  CHECK(lookups.completed() == n);
  for (std::size_t i = 0; i < n; ++i) {
    const Call<ActiveStreams> call = lookups.take(i);
    REQUIRE(call.times == 1);
    CHECK(call.thread == main);
    CHECK_FALSE(call.insideCall);
    CHECK(call.value->status == LookupStatus::Verified);
  }
  CHECK(lookups.invocations() == n);

  // An ownership-lost callback too.
  auto lock = client.acquireStreamLock("chat-lost", "stream-lost");
  REQUIRE(lock);
  const std::size_t postedBefore = host.posted();
  std::mutex lostMutex;
  std::vector<std::pair<std::string, std::string>> lost;
  std::thread::id lostOn;
  auto heartbeat = lock->startHeartbeat([&](const std::string& chat, const std::string& stream) {
    const std::lock_guard<std::mutex> guard(lostMutex);
    lost.emplace_back(chat, stream);
    lostOn = std::this_thread::get_id();
  });
  redis.del(test::lockKey(options, "chat-lost"));
  REQUIRE(test::waitUntil([&] { return heartbeat.ownershipLost(); }, 10s));
  REQUIRE(host.waitForPosted(postedBefore + 1, 10s));
  {
    const std::lock_guard<std::mutex> guard(lostMutex);
    CHECK(lost.empty());  // reported (ownershipLost()), the callback waits for the host
  }
  CHECK(host.drain() == 1);
  const std::lock_guard<std::mutex> guard(lostMutex);
  CHECK(lost == std::vector<std::pair<std::string, std::string>>{{"chat-lost", "stream-lost"}});
  CHECK(lostOn == main);
}

TEST_CASE("executor: blocking calls made inside a completion that the host runs do not deadlock") {
  // The host runs its tasks on one thread (here the main thread): were the blocking forms to wait
  // for a completion delivered through the executor, they would wait for themselves.
  const Watchdog watchdog("executor: blocking calls inside a completion", 60s);
  HostLoop host;
  test::CapturedLog log;
  test::TestDb db;
  test::ChatsTable chats(db);
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  options.executor = host.executor();
  Client client(options);
  const auto chat = chats.insert(std::nullopt);
  const auto stale = chats.insert(std::string("stream-gone"));

  struct Seen {
    LookupStatus lookup = LookupStatus::Unknown;
    bool acquired = false;
    bool wrote = false;
    ReleaseOutcome released = ReleaseOutcome::Failed;
    std::optional<MarkerState> reconciled;
    std::size_t repaired = 0;
    std::string redis;
    bool ranAll = false;
  } seen;
  Calls<ActiveStreams> outer;
  auto done = outer.completion();
  initiate([&] {
    client.getActiveChatStreamIds({"chat-x"}, [&, done](ActiveStreams active) {
      seen.lookup = client.getActiveChatStreamIds({"chat-y"}).status;
      auto lock = client.acquireStreamLock(chat, "stream-1");
      seen.acquired = lock.has_value();
      seen.wrote = client.writeMarker(chat, "stream-1");
      const auto result = client.reconcileChatStreamMarkers({{stale, std::string("stream-gone")}}, ReconcileOptions{true});
      if (!result.markers.empty()) seen.reconciled = result.markers[0].state;
      seen.repaired = result.repair.cleared;
      seen.redis = streamlock::toString(client.redisStatus().mode);
      if (lock) seen.released = lock->release();
      seen.ranAll = true;
      done(std::move(active));
    });
  });
  REQUIRE(host.waitForPosted(1, 10s));
  CHECK(host.drain() == 1);  // runs the blocking calls, on the host's thread, to the end

  REQUIRE(outer.times() == 1);
  CHECK(seen.ranAll);
  CHECK(seen.lookup == LookupStatus::Verified);
  CHECK(seen.acquired);
  CHECK(seen.wrote);
  CHECK(seen.reconciled == MarkerState::Inactive);
  CHECK(seen.repaired == 1);
  CHECK(seen.redis == "verified");
  CHECK(seen.released == ReleaseOutcome::Released);
  CHECK(chats.marker(stale) == std::nullopt);
  CHECK(chats.marker(chat) == Value("stream-1"));
  CHECK(host.drain() == 0);  // the blocking calls queued nothing for the host
}

TEST_CASE("executor: a task the executor throws on runs on the library's callback thread, exactly once") {
  const Watchdog watchdog("executor: throws", 60s);
  HostLoop host;
  test::CapturedLog log;
  test::TestRedis redis(test::redisUrl());
  auto options = test::clientOptions(test::redisUrl(), log);
  bool keepsCopy = false;
  SECTION("the executor throws without keeping the task") {
    options.executor = [](std::function<void()>) { throw std::runtime_error("the host's queue is full"); };
  }
  SECTION("the executor keeps a copy of the task in the host's queue, then throws") {
    options.executor = host.keepsAndThrows();
    keepsCopy = true;
  }
  Client client(options);
  const auto main = std::this_thread::get_id();
  redis.set(test::lockKey(options, "chat-a"), "stream-a");

  Calls<ActiveStreams> lookup;
  initiate([&] { client.getActiveChatStreamIds({"chat-a"}, lookup.completion()); });
  REQUIRE(lookup.wait(10s));
  Call<ActiveStreams> call = lookup.take();
  CHECK(call.thread != main);  // the callback thread
  CHECK_FALSE(call.insideCall);
  CHECK(call.value->status == LookupStatus::Verified);
  CHECK(call.value->owners == Owners{{"chat-a", "stream-a"}});
  if (keepsCopy) {
    // The host runs its copy later: it must not call the completion a second time.
    CHECK(host.drain() == 1);
  }
  client.shutdown();  // joins the callback thread: nothing can still be on its way
  CHECK(lookup.invocations() == 1);
  CHECK(log.contains("the executor threw"));
}

TEST_CASE("executor: the completions pending at shutdown() are all handed to the executor before it returns") {
  const Watchdog watchdog("executor: shutdown", 60s);
  HostLoop host;
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.executor = host.executor();
  options.breaker.failureThreshold = 0;
  options.redis.lookupDeadline = 5s;  // pending until shutdown, not until the deadline
  Client client(options);
  REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified; }));
  server.pause();

  constexpr std::size_t n = 50;
  Calls<ActiveStreams> lookups(n);
  for (std::size_t i = 0; i < n; ++i) {
    initiate([&] { client.getActiveChatStreamIds({"chat-" + std::to_string(i)}, lookups.completion(i)); });
  }
  client.shutdown();
  CHECK(lookups.completed() == 0);  // on the host's loop, not inside shutdown()
  CHECK(host.queued() == n);
  CHECK(host.drain() == n);
  CHECK(lookups.completed() == n);
  CHECK(lookups.invocations() == n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto call = lookups.take(i);
    CHECK(call.value->status == LookupStatus::Unknown);
  }
  server.resume();
}

// ---------------------------------------------------------------------------------------------------
// Every completion form, once each, against a healthy Redis and PostgreSQL: called exactly once, on a
// thread other than the caller's, never inside its call, with the right value.

namespace {

// The Client of the completion-form cases: the shared Redis, PostgreSQL with a chats table.
struct Healthy {
  test::CapturedLog log;
  test::TestRedis redis{test::redisUrl()};
  test::TestDb db;
  test::ChatsTable chats{db};
  Options options = [this] {
    return test::clientOptions(test::redisUrl(), log, chats);
  }();
  Client client{options};
  std::string key(const std::string& chat) const { return test::lockKey(options, chat); }
};

// The checks every completion shares: ran once, elsewhere, not inside its call.
template <typename T>
Call<T> completedElsewhere(Calls<T>& calls, std::thread::id caller) {
  REQUIRE(calls.wait(10s));
  Call<T> call = calls.take();
  CHECK(call.times == 1);
  CHECK(call.thread != caller);
  CHECK_FALSE(call.insideCall);
  return call;
}

}  // namespace

TEST_CASE("completion form of getActiveChatStreamIds: the verified owners") {
  const Watchdog watchdog("getActiveChatStreamIds", 60s);
  Healthy h;
  const auto caller = std::this_thread::get_id();
  h.redis.set(h.key("chat-a"), "stream-a");
  h.redis.set(h.key("chat-empty"), "");

  Calls<ActiveStreams> lookup;
  initiate([&] { h.client.getActiveChatStreamIds({"chat-a", "chat-b", "chat-empty"}, lookup.completion()); });
  const auto call = completedElsewhere(lookup, caller);
  CHECK(call.value->status == LookupStatus::Verified);
  CHECK(call.value->owners == Owners{{"chat-a", "stream-a"}});

  SECTION("empty input: verified, still never inside the call") {
    Calls<ActiveStreams> empty;
    initiate([&] { h.client.getActiveChatStreamIds({}, empty.completion()); });
    const auto none = completedElsewhere(empty, caller);
    CHECK(none.value->status == LookupStatus::Verified);
    CHECK(none.value->owners.empty());
    h.client.shutdown();
    CHECK(empty.invocations() == 1);
  }
  SECTION("Redis not configured: unknown with the local owners, still never inside the call") {
    test::CapturedLog log;
    Client local(test::clientOptions("", log));
    local.pendingStreams().record("chat-a", "stream-local");
    Calls<ActiveStreams> unknown;
    initiate([&] { local.getActiveChatStreamIds({"chat-a", "chat-b"}, unknown.completion()); });
    const auto answer = completedElsewhere(unknown, caller);
    CHECK(answer.value->status == LookupStatus::Unknown);
    CHECK(answer.value->owners == Owners{{"chat-a", "stream-local"}});
    local.shutdown();
    CHECK(unknown.invocations() == 1);
  }
  h.client.shutdown();
  CHECK(lookup.invocations() == 1);
}

TEST_CASE("completion form of reconcileChatStreamMarkers: the reconciled markers, the stale one repaired") {
  const Watchdog watchdog("reconcileChatStreamMarkers", 60s);
  Healthy h;
  const auto caller = std::this_thread::get_id();
  const auto live = h.chats.insert(std::string("stream-old"));
  const auto stale = h.chats.insert(std::string("stream-gone"));
  const auto idle = h.chats.insert(std::nullopt);
  h.redis.set(h.key(live), "stream-live");

  Calls<ReconcileResult> reconcile;
  initiate([&] {
    h.client.reconcileChatStreamMarkers(h.chats.candidates({live, stale, idle}), ReconcileOptions{true},
                                        reconcile.completion());
  });
  const auto call = completedElsewhere(reconcile, caller);
  const ReconcileResult& result = *call.value;
  CHECK(result.status == LookupStatus::Verified);
  REQUIRE(result.markers.size() == 3);
  CHECK(result.markers[0].chatId == live);
  CHECK(result.markers[0].state == MarkerState::Active);
  CHECK(result.markers[0].streamId == Value("stream-live"));  // the owner wins over the stale DB value
  CHECK(result.markers[1].state == MarkerState::Inactive);
  CHECK(result.markers[1].streamId == std::nullopt);
  CHECK(result.markers[1].staleMarker == Value("stream-gone"));
  CHECK(result.markers[2].state == MarkerState::Inactive);
  CHECK(result.repair.cleared == 1);
  CHECK_FALSE(result.repair.failed);
  // The repair completed before the completion ran.
  CHECK(h.chats.marker(stale) == std::nullopt);
  CHECK(h.chats.marker(live) == Value("stream-old"));
  h.client.shutdown();
  CHECK(reconcile.invocations() == 1);
}

TEST_CASE("completion form of repairStaleMarkers: compare-and-clear against the value read") {
  const Watchdog watchdog("repairStaleMarkers", 60s);
  Healthy h;
  const auto caller = std::this_thread::get_id();
  const auto stale = h.chats.insert(std::string("stream-gone"));
  const auto restarted = h.chats.insert(std::string("stream-new"));

  Calls<RepairResult> repair;
  initiate([&] {
    h.client.repairStaleMarkers({{stale, "stream-gone"}, {restarted, "stream-old"}}, repair.completion());
  });
  const auto call = completedElsewhere(repair, caller);
  CHECK(call.value->cleared == 1);
  CHECK_FALSE(call.value->failed);
  CHECK(h.chats.marker(stale) == std::nullopt);
  CHECK(h.chats.marker(restarted) == Value("stream-new"));

  SECTION("without PostgreSQL: failed, as a value") {
    test::CapturedLog log;
    Client noDb(test::clientOptions(test::redisUrl(), log));
    Calls<RepairResult> failed;
    initiate([&] { noDb.repairStaleMarkers({{stale, "x"}}, failed.completion()); });
    const auto outcome = completedElsewhere(failed, caller);
    CHECK(outcome.value->failed);
    CHECK(outcome.value->cleared == 0);
  }
  h.client.shutdown();
  CHECK(repair.invocations() == 1);
}

TEST_CASE("completion form of acquireStreamLock: a lock, busy (nullopt), or an Error in the Result") {
  const Watchdog watchdog("acquireStreamLock", 60s);
  const auto caller = std::this_thread::get_id();

  SECTION("acquired, then busy for another stream") {
    Healthy h;
    Calls<AcquireResult> first;
    initiate([&] { h.client.acquireStreamLock("chat-1", "stream-1", 0ms, first.completion()); });
    auto won = completedElsewhere(first, caller);
    INFO("the acquire gave " << describe(errorOf(*won.value)));
    REQUIRE(won.value->ok());
    REQUIRE(won.value->value().has_value());
    const StreamLock& lock = *won.value->value();
    CHECK(lock.chatId() == "chat-1");
    CHECK(lock.streamId() == "stream-1");
    CHECK(h.redis.get(h.key("chat-1")) == Value("stream-1"));
    CHECK(h.client.pendingStreams().owner("chat-1") == Value("stream-1"));

    Calls<AcquireResult> second;
    initiate([&] { h.client.acquireStreamLock("chat-1", "stream-2", 0ms, second.completion()); });
    auto busy = completedElsewhere(second, caller);
    INFO("the second acquire gave " << describe(errorOf(*busy.value)));
    REQUIRE(busy.value->ok());
    CHECK_FALSE(busy.value->value().has_value());
    CHECK(h.redis.get(h.key("chat-1")) == Value("stream-1"));

    SECTION("waitFor: acquired once the holder releases") {
      Calls<AcquireResult> waiting;
      initiate([&] { h.client.acquireStreamLock("chat-1", "stream-3", 5s, waiting.completion()); });
      CHECK(waiting.completed() == 0);
      won.value.reset();  // destroys the first lock: released
      auto taken = completedElsewhere(waiting, caller);
      REQUIRE(taken.value->ok());
      CHECK(taken.value->value().has_value());
      CHECK(h.redis.get(h.key("chat-1")) == Value("stream-3"));
    }
    SECTION("an empty id: Error(InvalidArgument), still never inside the call") {
      Calls<AcquireResult> invalid;
      initiate([&] { h.client.acquireStreamLock("", "stream-x", 0ms, invalid.completion()); });
      auto refused = completedElsewhere(invalid, caller);
      CHECK(errorOf(*refused.value) == ErrorCode::InvalidArgument);
    }
    h.client.shutdown();
    CHECK(first.invocations() == 1);
    CHECK(second.invocations() == 1);
  }

  SECTION("failed: Redis hung, an Error (not nullopt) in the Result") {
    test::RedisServerProcess server;
    test::CapturedLog log;
    auto options = test::clientOptions(server.url(), log);
    options.redis.commandTimeout = 300ms;
    Client client(options);
    REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified; }));
    server.pause();
    const auto start = Clock::now();
    Calls<AcquireResult> acquire;
    initiate([&] { client.acquireStreamLock("chat-1", "stream-1", 0ms, acquire.completion()); });
    const auto call = completedElsewhere(acquire, caller);
    server.resume();
    INFO("the acquire gave " << describe(errorOf(*call.value)) << " after " << ms(call.at - start) << " ms");
    REQUIRE_FALSE(call.value->ok());
    CHECK(errorOf(*call.value) == ErrorCode::Timeout);
    CHECK(call.at - start >= 250ms);
    CHECK(call.at - start < 2s * kSlowdown);
    client.shutdown();
    CHECK(acquire.invocations() == 1);
  }
}

TEST_CASE("completion form of StreamLock::release: released, then already released, or not owner") {
  const Watchdog watchdog("StreamLock::release", 60s);
  Healthy h;
  const auto caller = std::this_thread::get_id();
  auto lock = h.client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);

  Calls<ReleaseOutcome> release;
  initiate([&] { lock->release(release.completion()); });
  const auto call = completedElsewhere(release, caller);
  CHECK(call.value == ReleaseOutcome::Released);
  CHECK_FALSE(h.redis.exists(h.key("chat-1")));
  CHECK(h.client.pendingStreams().owner("chat-1") == std::nullopt);

  Calls<ReleaseOutcome> again;
  initiate([&] { lock->release(again.completion()); });
  CHECK(completedElsewhere(again, caller).value == ReleaseOutcome::AlreadyReleased);

  auto taken = h.client.acquireStreamLock("chat-2", "stream-2");
  REQUIRE(taken);
  h.redis.set(h.key("chat-2"), "stream-other");  // another stream took it over
  Calls<ReleaseOutcome> notOwner;
  initiate([&] { taken->release(notOwner.completion()); });
  CHECK(completedElsewhere(notOwner, caller).value == ReleaseOutcome::NotOwner);
  CHECK(h.redis.get(h.key("chat-2")) == Value("stream-other"));

  h.client.shutdown();
  CHECK(release.invocations() == 1);
  CHECK(again.invocations() == 1);
  CHECK(notOwner.invocations() == 1);
}

TEST_CASE("completion forms of writeMarker and clearMarker: whether a row changed, as Result<bool>") {
  const Watchdog watchdog("writeMarker / clearMarker", 60s);
  Healthy h;
  const auto caller = std::this_thread::get_id();
  const auto chat = h.chats.insert(std::nullopt);

  Calls<Result<bool>> write;
  initiate([&] { h.client.writeMarker(chat, "stream-1", write.completion()); });
  auto wrote = completedElsewhere(write, caller);
  INFO("writeMarker gave " << describe(errorOf(*wrote.value)));
  REQUIRE(wrote.value->ok());
  CHECK(wrote.value->value());
  CHECK(h.chats.marker(chat) == Value("stream-1"));

  Calls<Result<bool>> clearOther;
  initiate([&] { h.client.clearMarker(chat, "stream-2", clearOther.completion()); });
  auto other = completedElsewhere(clearOther, caller);
  REQUIRE(other.value->ok());
  CHECK_FALSE(other.value->value());  // not its marker: nothing changed
  CHECK(h.chats.marker(chat) == Value("stream-1"));

  Calls<Result<bool>> clearOwn;
  initiate([&] { h.client.clearMarker(chat, "stream-1", clearOwn.completion()); });
  auto own = completedElsewhere(clearOwn, caller);
  REQUIRE(own.value->ok());
  CHECK(own.value->value());
  CHECK(h.chats.marker(chat) == std::nullopt);

  SECTION("a missing row: false") {
    Calls<Result<bool>> missing;
    initiate([&] { h.client.writeMarker("00000000-0000-0000-0000-000000000000", "s", missing.completion()); });
    auto none = completedElsewhere(missing, caller);
    REQUIRE(none.value->ok());
    CHECK_FALSE(none.value->value());
  }
  SECTION("a database error: an Error in the Result, not an exception") {
    Calls<Result<bool>> invalid;
    initiate([&] { h.client.writeMarker("not-a-uuid", "s", invalid.completion()); });
    auto failed = completedElsewhere(invalid, caller);
    CHECK(errorOf(*failed.value) == ErrorCode::ServerError);
  }
  SECTION("without PostgreSQL: an Error in the Result") {
    test::CapturedLog log;
    Client noDb(test::clientOptions(test::redisUrl(), log));
    Calls<Result<bool>> refused;
    initiate([&] { noDb.clearMarker(chat, "s", refused.completion()); });
    auto outcome = completedElsewhere(refused, caller);
    CHECK(errorOf(*outcome.value) == ErrorCode::InvalidArgument);
  }
  h.client.shutdown();
  CHECK(write.invocations() == 1);
  CHECK(clearOther.invocations() == 1);
  CHECK(clearOwn.invocations() == 1);
}

// ---------------------------------------------------------------------------------------------------
// After shutdown() returned, every form completes at once with unknown / Error(ShutDown) /
// AlreadyReleased: inline without an executor, on the executor with one.

namespace {

void everyFormAfterShutdown(bool withExecutor) {
  const Watchdog watchdog("after shutdown", 60s);
  HostLoop host;
  test::CapturedLog log;
  test::TestDb db;
  test::ChatsTable chats(db);
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  if (withExecutor) options.executor = host.executor();
  Client client(options);
  const auto caller = std::this_thread::get_id();
  const auto chat = chats.insert(std::string("stream-1"));
  auto lock = client.acquireStreamLock(chat, "stream-1");
  REQUIRE(lock);
  client.shutdown();
  const std::size_t postedAtShutdown = host.posted();

  Calls<ActiveStreams> lookup;
  Calls<ReconcileResult> reconcile;
  Calls<RepairResult> repair;
  Calls<AcquireResult> acquire;
  Calls<ReleaseOutcome> release;
  Calls<Result<bool>> write;
  Calls<Result<bool>> clear;
  initiate([&] { client.getActiveChatStreamIds({chat}, lookup.completion()); });
  initiate([&] { client.reconcileChatStreamMarkers({{chat, std::string("stream-1")}}, ReconcileOptions{true}, reconcile.completion()); });
  initiate([&] { client.repairStaleMarkers({{chat, "stream-1"}}, repair.completion()); });
  initiate([&] { client.acquireStreamLock("chat-2", "stream-2", 0ms, acquire.completion()); });
  initiate([&] { lock->release(release.completion()); });
  initiate([&] { client.writeMarker(chat, "stream-3", write.completion()); });
  initiate([&] { client.clearMarker(chat, "stream-1", clear.completion()); });

  if (withExecutor) {
    CHECK(host.posted() - postedAtShutdown == 7);
    CHECK(lookup.completed() + reconcile.completed() + repair.completed() + acquire.completed() +
              release.completed() + write.completed() + clear.completed() ==
          0);  // none inline
    host.drain();
  }
  // Without an executor they completed inline (checked below); with one, when the host drained.
  const auto checkWhere = [&](auto& calls, const char* form) {
    INFO(form);
    REQUIRE(calls.completed() == 1);
    auto call = calls.take();
    CHECK(call.times == 1);
    CHECK(call.thread == caller);
    CHECK(call.insideCall == !withExecutor);
    return call;
  };
  const auto looked = checkWhere(lookup, "getActiveChatStreamIds");
  CHECK(looked.value->status == LookupStatus::Unknown);
  const auto reconciled = checkWhere(reconcile, "reconcileChatStreamMarkers");
  CHECK(reconciled.value->status == LookupStatus::Unknown);
  REQUIRE(reconciled.value->markers.size() == 1);
  CHECK(reconciled.value->markers[0].state == MarkerState::Unknown);
  CHECK(reconciled.value->markers[0].streamId == Value("stream-1"));  // preserved
  const auto repaired = checkWhere(repair, "repairStaleMarkers");
  CHECK(repaired.value->failed);
  const auto acquired = checkWhere(acquire, "acquireStreamLock");
  CHECK(errorOf(*acquired.value) == ErrorCode::ShutDown);
  const auto released = checkWhere(release, "StreamLock::release");
  CHECK(released.value == ReleaseOutcome::AlreadyReleased);
  const auto wrote = checkWhere(write, "writeMarker");
  CHECK(errorOf(*wrote.value) == ErrorCode::ShutDown);
  const auto cleared = checkWhere(clear, "clearMarker");
  CHECK(errorOf(*cleared.value) == ErrorCode::ShutDown);
  CHECK(chats.marker(chat) == Value("stream-1"));  // nothing was written after shutdown
}

}  // namespace

TEST_CASE("after shutdown() every completion form completes at once, inline when there is no executor") {
  everyFormAfterShutdown(false);
}

TEST_CASE("after shutdown() every completion form completes at once, on the executor when there is one") {
  everyFormAfterShutdown(true);
}

TEST_CASE("shutdown() racing a new Client's first call: the call completes, blocking or not") {
  // A call that never completes hangs this case: the watchdog ends it.
  const Watchdog watchdog("shutdown() racing a new Client's first call", 120s);
  test::CapturedLog log;
  // The first call starts the I/O thread while shutdown() decides whether there is one to stop.
  int completed = 0;
  for (int round = 0; round < 300; ++round) {
    Client client(test::clientOptions(test::redisUrl(), log));
    std::atomic<int> ready{0};
    std::promise<void> done;
    std::thread caller([&] {
      ++ready;
      while (ready.load() < 2) {
      }
      if (round % 2 == 0) {
        client.getActiveChatStreamIds({"race"}, [&done](ActiveStreams) { done.set_value(); });
      } else {
        (void)client.getActiveChatStreamIds({"race"});
        done.set_value();
      }
    });
    ++ready;
    while (ready.load() < 2) {
    }
    // 0 to 99 µs later, so that some rounds land while the call is starting the thread.
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(round % 100);
    while (std::chrono::steady_clock::now() < until) {
    }
    client.shutdown();
    done.get_future().wait();
    caller.join();
    ++completed;
  }
  CHECK(completed == 300);
}

TEST_CASE("shutdown() with a PostgreSQL statement in flight completes it with Error(ShutDown), and the statement "
          "ending later touches nothing of the destroyed Client") {
  // The UPDATE waits on a row lock that the test holds; the Client is destroyed meanwhile; then the
  // test lets the UPDATE go on. Whatever the library still does for it must not use the Client's
  // memory (the suite runs under ASan in CI), and must end.
  const Watchdog watchdog("PostgreSQL statement in flight at shutdown", 60s);
  test::TestDb db;
  test::TestDb blocker;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  options.postgres.statementTimeout = 20s;
  const auto chat = chats.insert(std::nullopt);
  const auto before = threadsWithoutClient();
  auto client = std::make_unique<Client>(options);

  blocker.exec("BEGIN");
  blocker.exec("SELECT 1 FROM " + chats.name() + " WHERE id = $1 FOR UPDATE", {chat});
  Calls<Result<bool>> write;
  initiate([&] { client->writeMarker(chat, "stream-1", write.completion()); });
  const bool waiting = test::waitUntil(
      [&] {
        return db.number("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
                         "strpos(query, $1) > 0 AND query ~* '^\\s*update'",
                         {chats.name()}) == 1;
      },
      10s);
  REQUIRE(waiting);  // the UPDATE is blocked on the row lock

  client.reset();  // shutdown(), then the Client is gone
  const std::size_t completedAtDestruction = write.completed();
  blocker.exec("ROLLBACK");  // the UPDATE goes on now, if its session still runs it
  const bool quiet = test::waitUntil([&] { return test::threadCount() <= before; }, 10s);

  INFO("threads before the Client: " << before << ", now " << test::threadCount());
  CHECK(completedAtDestruction == 1);
  auto call = write.take();
  REQUIRE(call.value);
  CHECK(errorOf(*call.value) == ErrorCode::ShutDown);
  CHECK(quiet);
  CHECK(write.invocations() == 1);
}

// ---------------------------------------------------------------------------------------------------
// Threads: the I/O thread, the callback thread once a completion or callback needs it, and nothing
// per call.

TEST_CASE("threads: 500 concurrent completion-form calls use the I/O thread and one callback thread, no more") {
  const Watchdog watchdog("threads: 500 calls", 60s);
  test::RedisServerProcess server;
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  options.breaker.failureThreshold = 0;
  options.redis.lookupDeadline = 500ms;
  bool hung = false;
  SECTION("Redis answering") {}
  SECTION("Redis hung: all 500 pending at once") { hung = true; }
  const auto before = threadsWithoutClient();
  Client client(options);
  if (hung) {
    REQUIRE(test::waitUntil([&] { return client.getActiveChatStreamIds({"warm-up"}).status == LookupStatus::Verified; }));
    server.pause();
  }

  constexpr std::size_t n = 500;
  Calls<ActiveStreams> lookups(n);
  Calls<ReconcileResult> reconciles(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string chat = "chat-" + std::to_string(i);
    if (i % 2 == 0) {
      initiate([&] { client.getActiveChatStreamIds({chat}, lookups.completion(i)); });
    } else {
      initiate([&] {
        client.reconcileChatStreamMarkers({{chat, std::string("stream")}}, ReconcileOptions{}, reconciles.completion(i));
      });
    }
  }
  const auto whilePending = test::threadCount();
  const ThreadPeak peak =
      peakThreadsUntil([&] { return lookups.completed() + reconciles.completed() == n; }, 10s * kSlowdown);
  if (hung) server.resume();
  INFO("threads before the Client: " << before << "; right after the calls: " << whilePending
                                     << "; at most, until all completed: " << peak.peak);
  REQUIRE(peak.reached);
  CHECK(std::max(whilePending, peak.peak) <= before + 2);
  CHECK(lookups.invocations() + reconciles.invocations() == n);
}

TEST_CASE("threads: with an executor, completion-form calls add only the I/O thread") {
  const Watchdog watchdog("threads: executor", 60s);
  HostLoop host;
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  options.executor = host.executor();
  const auto before = threadsWithoutClient();
  Client client(options);
  constexpr std::size_t n = 100;
  Calls<ActiveStreams> lookups(n);
  for (std::size_t i = 0; i < n; ++i) {
    initiate([&] { client.getActiveChatStreamIds({"chat-" + std::to_string(i)}, lookups.completion(i)); });
  }
  const ThreadPeak peak = peakThreadsUntil([&] { return host.posted() == n; }, 10s);
  REQUIRE(peak.reached);
  host.drain();
  INFO("threads before the Client: " << before << "; at most: " << peak.peak);
  CHECK(peak.peak <= before + 1);
  CHECK(lookups.completed() == n);
}

TEST_CASE("threads: blocking-only use (no completions, no callbacks) adds one thread") {
  const Watchdog watchdog("threads: blocking only", 60s);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log);
  const auto before = threadsWithoutClient();
  Client client(options);
  std::atomic<bool> finished{false};
  std::size_t peak = 0;
  std::atomic<pid_t> samplerTid{0};
  std::thread sampler([&] {
    samplerTid = test::currentTid();
    while (!finished.load()) {
      peak = std::max(peak, test::threadCount());
      std::this_thread::sleep_for(1ms);
    }
  });
  bool verified = true;
  for (int i = 0; i < 20; ++i) {
    verified = verified && client.getActiveChatStreamIds({"chat-" + std::to_string(i)}).status == LookupStatus::Verified;
    auto lock = client.acquireStreamLock("chat-" + std::to_string(i), "stream");
    verified = verified && lock.has_value();
    auto heartbeat = lock ? lock->startHeartbeat() : streamlock::Heartbeat{};
    verified = verified && client.reconcileChatStreamMarkers({{"chat-x", std::string("s")}}).status == LookupStatus::Verified;
    if (lock && i % 2 == 0) verified = verified && lock->release() == ReleaseOutcome::Released;
    // odd i: the lock is released by its destructor
  }
  finished = true;
  sampler.join();
  (void)test::waitReaped(samplerTid);  // else it may still be counted
  const auto after = test::threadCount();
  INFO("threads before the Client: " << before << "; after: " << after << "; at most: " << peak
                                     << " (the sampler thread counts once)");
  CHECK(verified);
  CHECK(after == before + 1);
  CHECK(peak <= before + 2);  // the I/O thread and the sampler itself
}

TEST_CASE("threads: completion-form PostgreSQL calls use no thread per call") {
  // The contract: one I/O thread drives every socket, Redis and PostgreSQL; nothing per call.
  const Watchdog watchdog("threads: PostgreSQL", 60s);
  test::CapturedLog log;
  test::TestDb db;
  test::ChatsTable chats(db);
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  options.postgres.poolSize = 2;
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(chats.insert(std::nullopt));
  const auto before = threadsWithoutClient();
  Client client(options);

  Calls<Result<bool>> writes(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    initiate([&] { client.writeMarker(ids[i], "stream-" + std::to_string(i), writes.completion(i)); });
  }
  const auto whilePending = test::threadCount();
  const ThreadPeak peak = peakThreadsUntil([&] { return writes.completed() == ids.size(); }, 20s * kSlowdown);
  INFO("threads before the Client: " << before << "; right after 50 writeMarker calls: " << whilePending
                                     << "; at most, until all completed: " << peak.peak);
  REQUIRE(peak.reached);
  CHECK(std::max(whilePending, peak.peak) <= before + 2);
  std::size_t changed = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto call = writes.take(i);
    if (call.value->ok() && call.value->value()) ++changed;
  }
  CHECK(changed == ids.size());
}

// ---------------------------------------------------------------------------------------------------
// Concurrent callers share one connection: their commands are pipelined on it.

TEST_CASE("pipelining: 50 blocking lookups from 50 threads at once share one Redis connection") {
  const Watchdog watchdog("pipelining", 60s);
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  constexpr int n = 50;
  for (int i = 0; i < n; ++i) {
    if (i % 5 != 4) redis.set(test::lockKey(options, "chat-" + std::to_string(i)), "stream-" + std::to_string(i));
  }
  const auto connectionsBefore = redis.infoField("stats", "total_connections_received");
  const auto mgetsBefore = redis.calls("mget");
  Client client(options);

  std::vector<ActiveStreams> results(n);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> callers;
  for (int i = 0; i < n; ++i) {
    callers.emplace_back([&, i] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      results[static_cast<std::size_t>(i)] = client.getActiveChatStreamIds({"chat-" + std::to_string(i)});
    });
  }
  while (ready.load() < n) std::this_thread::yield();
  go = true;
  for (auto& caller : callers) caller.join();

  for (int i = 0; i < n; ++i) {
    INFO("caller " << i);
    const auto& result = results[static_cast<std::size_t>(i)];
    CHECK(result.status == LookupStatus::Verified);
    const Owners expected = i % 5 == 4 ? Owners{} : Owners{{"chat-" + std::to_string(i), "stream-" + std::to_string(i)}};
    CHECK(result.owners == expected);
  }
  const auto connections = redis.infoField("stats", "total_connections_received") - connectionsBefore;
  const auto mgets = redis.calls("mget") - mgetsBefore;
  INFO("Redis received " << connections << " connection(s) and " << mgets << " MGET(s); the Client counted "
                         << client.counters().lookupRoundTrips << " lookup round trip(s)");
  CHECK(connections == 1);
  CHECK(mgets == n);
  CHECK(client.counters().lookupsVerified == static_cast<std::uint64_t>(n));
}

// ---------------------------------------------------------------------------------------------------
// Destroying a StreamLock hands the release to the I/O thread: it never waits on the network.

TEST_CASE("destroying a StreamLock returns at once on a hung Redis, and the lock is deleted once Redis answers") {
  const Watchdog watchdog("destroying a StreamLock", 60s);
  test::RedisServerProcess server;
  test::TestRedis redis(server.url());
  test::CapturedLog log;
  auto options = test::clientOptions(server.url(), log);
  Client client(options);  // commandTimeout 1 s
  const auto key = test::lockKey(options, "chat-1");
  auto lock = client.acquireStreamLock("chat-1", "stream-1");
  REQUIRE(lock);
  REQUIRE(redis.get(key) == Value("stream-1"));

  server.pause();
  const auto start = Clock::now();
  lock.reset();
  const auto took = Clock::now() - start;
  server.resume();
  INFO("~StreamLock took " << ms(took) << " ms on a hung Redis (commandTimeout 1000 ms)");
  CHECK(took < 50ms * kSlowdown);
  CHECK(test::waitUntil([&] { return !redis.exists(key); }, 10s));
  CHECK(test::waitUntil([&] { return client.counters().locksReleased == 1; }, 10s));
  CHECK(client.pendingStreams().owner("chat-1") == std::nullopt);
}
