#pragma once

// What the topology tests (cluster, sentinel) share: UUID-shaped chat ids, a lookup checked against
// the oracle, lookups in a background thread, an ownership-loss recorder, and "verified again
// within". Catch2 assertions stay in the test's main thread.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "env.h"
#include "streamlock/client.h"

namespace streamlock::test {

using Owners = std::unordered_map<std::string, std::string>;

// Chats and the owners the oracle wrote for them.
struct ChatSet {
  std::vector<std::string> chats;
  Owners expected;
};

// A UUID-shaped chat id (what the demo schema uses), different for each n.
inline std::string uuidLike(std::size_t n) {
  char buffer[40];
  const std::string unique = uniqueId();  // 16 hex digits
  std::snprintf(buffer, sizeof buffer, "%.8s-%.4s-4%03zx-8%.3s-%012zx", unique.c_str(), unique.c_str() + 8, n % 4096,
                unique.c_str() + 12, n);
  return buffer;
}

// What a lookup answered, checked against the oracle: a verified answer must equal it; an unknown
// one may only hold the local pending map's owners (none here unless given).
struct LookupCheck {
  std::size_t verified = 0;
  std::size_t unknown = 0;
  std::size_t wrong = 0;
  std::string firstWrong;

  void add(const streamlock::ActiveStreams& result, const Owners& expected, const Owners& local = {}) {
    if (result.status == LookupStatus::Verified) {
      ++verified;
      if (result.owners != expected) note(result.owners, expected, "verified");
    } else {
      ++unknown;
      if (result.owners != local) note(result.owners, local, "unknown");
    }
  }

 private:
  void note(const Owners& got, const Owners& want, const char* status) {
    if (wrong++ > 0) return;
    std::size_t missing = 0, extra = 0, differ = 0;
    for (const auto& [chat, owner] : want) {
      const auto found = got.find(chat);
      if (found == got.end()) ++missing;
      else if (found->second != owner) ++differ;
    }
    for (const auto& [chat, owner] : got) {
      if (want.count(chat) == 0) ++extra;
    }
    firstWrong = std::string(status) + " lookup: " + std::to_string(missing) + " owners missing, " +
                 std::to_string(extra) + " extra, " + std::to_string(differ) + " different";
  }
};

// Looks the chats up in a loop on its own thread until stopped; the checks are asserted by the
// main thread (Catch2 assertions are not thread-safe).
class BackgroundReader {
 public:
  BackgroundReader(Client& client, std::vector<std::string> chats, Owners expected)
      : client_(client), chats_(std::move(chats)), expected_(std::move(expected)), thread_([this] { run(); }) {}
  ~BackgroundReader() { stop(); }
  BackgroundReader(const BackgroundReader&) = delete;
  BackgroundReader& operator=(const BackgroundReader&) = delete;

  LookupCheck stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    const std::lock_guard<std::mutex> lock(mutex_);
    return check_;
  }
  std::size_t lookups() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return check_.verified + check_.unknown;
  }
  Milliseconds slowest() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return slowest_;
  }

 private:
  void run() {
    while (!stop_) {
      const auto start = std::chrono::steady_clock::now();
      const auto result = client_.getActiveChatStreamIds(chats_);
      const auto took = elapsedSince(start);
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        check_.add(result, expected_);
        slowest_ = std::max(slowest_, took);
      }
      std::this_thread::sleep_for(10ms);
    }
  }
  Client& client_;
  std::vector<std::string> chats_;
  Owners expected_;
  std::mutex mutex_;
  LookupCheck check_;
  Milliseconds slowest_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last
};

// Records ownership-loss callbacks in a state the callback shares.
class LossRecorder {
 public:
  streamlock::OwnershipLostCallback callback() {
    return [state = state_](const std::string& chat, const std::string&) {
      const std::lock_guard<std::mutex> lock(state->mutex);
      state->chats.push_back(chat);
      if (!state->first) state->first = std::chrono::steady_clock::now();
    };
  }
  std::vector<std::string> chats() const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->chats;
  }
  std::optional<std::chrono::steady_clock::time_point> first() const {
    const std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->first;
  }

 private:
  struct State {
    std::mutex mutex;
    std::vector<std::string> chats;
    std::optional<std::chrono::steady_clock::time_point> first;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Waits until a fresh lookup is verified with exactly the expected owners; returns how long it took.
inline std::optional<Milliseconds> verifiedAgainWithin(Client& client, const ChatSet& set, Milliseconds limit) {
  const auto start = std::chrono::steady_clock::now();
  const bool ok = waitUntil(
      [&] {
        const auto result = client.getActiveChatStreamIds(set.chats);
        return result.status == LookupStatus::Verified && result.owners == set.expected;
      },
      limit, 20ms);
  if (!ok) return std::nullopt;
  return elapsedSince(start);
}

inline Owners merged(Owners a, const Owners& b) {
  a.insert(b.begin(), b.end());
  return a;
}

}  // namespace streamlock::test
