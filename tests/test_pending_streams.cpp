// The process-local pending map: chatId -> the stream this process runs for it.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "env.h"
#include "streamlock/pending_streams.h"

using streamlock::PendingStreams;
using namespace std::chrono_literals;
namespace test = streamlock::test;

TEST_CASE("record: sets the local owner and replaces a previous one", "[unit]") {
  PendingStreams pending;
  CHECK_FALSE(pending.owner("chat-1"));
  pending.record("chat-1", "stream-a");
  CHECK(pending.owner("chat-1") == std::optional<std::string>("stream-a"));
  pending.record("chat-1", "stream-b");
  CHECK(pending.owner("chat-1") == std::optional<std::string>("stream-b"));
  CHECK(pending.size() == 1);
}

TEST_CASE("tryRecord: only when the chat has no local owner", "[unit]") {
  PendingStreams pending;
  CHECK(pending.tryRecord("chat-1", "stream-a"));
  CHECK_FALSE(pending.tryRecord("chat-1", "stream-b"));
  CHECK(pending.owner("chat-1") == std::optional<std::string>("stream-a"));
  CHECK(pending.tryRecord("chat-2", "stream-b"));
  CHECK(pending.size() == 2);
}

TEST_CASE("resolve: only with the matching stream id", "[unit]") {
  PendingStreams pending;
  pending.record("chat-1", "stream-a");
  CHECK_FALSE(pending.resolve("chat-1", "stream-b"));
  CHECK(pending.owner("chat-1") == std::optional<std::string>("stream-a"));
  CHECK_FALSE(pending.resolve("chat-2", "stream-a"));
  CHECK(pending.resolve("chat-1", "stream-a"));
  CHECK_FALSE(pending.owner("chat-1"));
  CHECK_FALSE(pending.resolve("chat-1", "stream-a"));
  CHECK(pending.size() == 0);
}

TEST_CASE("a resolved chat can be recorded again", "[unit]") {
  PendingStreams pending;
  REQUIRE(pending.tryRecord("chat-1", "stream-a"));
  REQUIRE(pending.resolve("chat-1", "stream-a"));
  CHECK(pending.tryRecord("chat-1", "stream-b"));
  CHECK(pending.owner("chat-1") == std::optional<std::string>("stream-b"));
}

TEST_CASE("clear: forgets every chat", "[unit]") {
  PendingStreams pending;
  pending.record("chat-1", "stream-a");
  pending.record("chat-2", "stream-b");
  pending.clear();
  CHECK(pending.size() == 0);
  CHECK_FALSE(pending.owner("chat-1"));
  CHECK_FALSE(pending.owner("chat-2"));
}

TEST_CASE("waitUntilReleased: at once when the chat has no owner", "[unit]") {
  PendingStreams pending;
  pending.record("chat-other", "stream-a");
  const auto start = std::chrono::steady_clock::now();
  CHECK(pending.waitUntilReleased("chat-1", 10s));
  CHECK(test::elapsedSince(start) < 5s);  // no hang
}

TEST_CASE("waitUntilReleased: returns true once another thread resolves the chat", "[unit]") {
  PendingStreams pending;
  pending.record("chat-1", "stream-a");
  std::promise<void> waiting;
  auto released = std::async(std::launch::async, [&] {
    waiting.get_future().wait();
    // The waiter cannot be observed entering its wait; a short head start makes it likely, so a
    // release that forgets to notify shows up as a wait until the timeout.
    std::this_thread::sleep_for(50ms);
    return pending.resolve("chat-1", "stream-a");
  });
  const auto start = std::chrono::steady_clock::now();
  waiting.set_value();
  const bool result = pending.waitUntilReleased("chat-1", 20s);
  const auto elapsed = test::elapsedSince(start);
  CHECK(released.get());
  CHECK(result);
  CHECK(elapsed < 10s);  // woken by the release, not by the timeout
  CHECK_FALSE(pending.owner("chat-1"));
}

TEST_CASE("waitUntilReleased: a resolve with another stream id does not release", "[unit]") {
  PendingStreams pending;
  pending.record("chat-1", "stream-a");
  auto wrong = std::async(std::launch::async, [&] { return pending.resolve("chat-1", "stream-b"); });
  CHECK_FALSE(wrong.get());
  CHECK_FALSE(pending.waitUntilReleased("chat-1", 50ms));
}

TEST_CASE("waitUntilReleased: false after the timeout while still owned", "[unit]") {
  PendingStreams pending;
  pending.record("chat-1", "stream-a");
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(pending.waitUntilReleased("chat-1", 100ms));
  const auto elapsed = test::elapsedSince(start);
  CHECK(elapsed >= 100ms);
  CHECK(elapsed < 5s);  // no hang
  CHECK(pending.owner("chat-1") == std::optional<std::string>("stream-a"));
}

TEST_CASE("tryRecord from many threads: exactly one wins", "[unit]") {
  PendingStreams pending;
  constexpr int threads = 8;
  std::vector<std::future<bool>> results;
  std::atomic<bool> go{false};
  for (int i = 0; i < threads; ++i) {
    results.push_back(std::async(std::launch::async, [&pending, &go, i] {
      while (!go.load()) std::this_thread::yield();
      return pending.tryRecord("chat-1", "stream-" + std::to_string(i));
    }));
  }
  go = true;
  int winners = 0;
  std::string winner;
  for (int i = 0; i < threads; ++i) {
    if (results[static_cast<std::size_t>(i)].get()) {
      ++winners;
      winner = "stream-" + std::to_string(i);
    }
  }
  CHECK(winners == 1);
  CHECK(pending.owner("chat-1") == std::optional<std::string>(winner));
}
