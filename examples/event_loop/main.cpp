// event_loop_stream: the writer protocol and a reader, driven entirely from ONE host thread with
// the completion forms of the API, as a service built on an event loop (Asio, libuv, drogon...)
// would use streamlock. The host loop here is a minimal task queue with timers; Options::executor
// posts every completion and ownership-lost callback into it, so the application's state needs no
// lock and the loop thread never blocks on the network.
//
//   acquire (completion) -> heartbeat -> write marker (completion) -> produce on loop timers while a
//   reader reconciles the chat every second (completion) -> clear marker -> release -> shutdown

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <streamlock/client.h>

#include "flags.h"

namespace {

constexpr const char* kProgram = "event_loop_stream";
using Clock = std::chrono::steady_clock;

// The host's event loop: tasks posted from any thread, timers, all run on the thread that calls
// run(). A real service has this already (io_context, uv_loop_t, trantor::EventLoop).
class HostLoop {
 public:
  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> guard(mutex_);
      tasks_.push_back(std::move(task));
    }
    wake_.notify_one();
  }
  void after(std::chrono::milliseconds delay, std::function<void()> task) {
    std::lock_guard<std::mutex> guard(mutex_);
    timers_.emplace(Clock::now() + delay, std::move(task));
  }
  void stop() {
    post([this] { stopped_ = true; });
  }
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopped_) {
      if (!tasks_.empty()) {
        auto task = std::move(tasks_.front());
        tasks_.pop_front();
        lock.unlock();
        task();
        lock.lock();
        continue;
      }
      if (!timers_.empty() && timers_.begin()->first <= Clock::now()) {
        auto task = std::move(timers_.begin()->second);
        timers_.erase(timers_.begin());
        lock.unlock();
        task();
        lock.lock();
        continue;
      }
      if (timers_.empty()) {
        wake_.wait(lock);
      } else {
        wake_.wait_until(lock, timers_.begin()->first);
      }
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  std::multimap<Clock::time_point, std::function<void()>> timers_;
  bool stopped_ = false;
};

struct Config {
  std::string chatId;
  std::string streamId = "event-loop-stream";
  std::string databaseUrl;
  std::string redisUrl;
  long durationS = 3;
};

const char* kUsage = R"(Usage: event_loop_stream --chat-id UUID --database-url URL [flags]

Runs one stream of the writer protocol, and a reader of the same chat, from a single event-loop
thread with streamlock's completion API (no call blocks the loop).

  --chat-id UUID        the chat (a copilot_chats row) to stream into (required)
  --stream-id ID        this stream's id (default: event-loop-stream)
  --database-url URL    PostgreSQL URL or conninfo (required)
  --redis-url URL       any Redis URL of the README (default: none, a process-local lock)
  --duration-s N        how long to produce (default 3)
  --help                show this text

Exit codes: 0 done, 1 failure, 2 usage, 3 lock busy, 4 lock ownership lost.
)";

int parse(int argc, char** argv, Config& config) {
  examples::FlagReader flags(argc, argv);
  while (flags.next()) {
    const std::string_view name = flags.name();
    std::string_view value;
    if (name == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (!flags.takeValue(value)) {
      fmt::print(stderr, "{}: {} needs a value\n", kProgram, name);
      return 2;
    }
    if (name == "--chat-id") {
      config.chatId = value;
    } else if (name == "--stream-id") {
      config.streamId = value;
    } else if (name == "--database-url") {
      config.databaseUrl = value;
    } else if (name == "--redis-url") {
      config.redisUrl = value;
    } else if (name == "--duration-s") {
      config.durationS = std::strtol(std::string(value).c_str(), nullptr, 10);
    } else {
      fmt::print(stderr, "{}: unknown flag {}\n", kProgram, name);
      return 2;
    }
  }
  if (config.chatId.empty() || config.databaseUrl.empty() || config.durationS < 0) {
    fmt::print(stderr, "{}: --chat-id and --database-url are required (see --help)\n", kProgram);
    return 2;
  }
  return -1;
}

// The application: plain members, touched only on the loop thread.
class Stream {
 public:
  Stream(HostLoop& loop, streamlock::Client& client, const Config& config)
      : loop_(loop), client_(client), config_(config) {}

  int exitCode() const { return exitCode_; }

  void start() {
    client_.acquireStreamLock(config_.chatId, config_.streamId, std::chrono::milliseconds{0},
                              [this](streamlock::AcquireResult result) { acquired(std::move(result)); });
  }

 private:
  void acquired(streamlock::AcquireResult result) {
    if (!result) return finish(1, fmt::format("cannot acquire the lock: {}", result.error()->what()));
    if (!result.value()) return finish(3, "the chat already has an active stream");
    lock_.emplace(std::move(*result.value()));
    fmt::print("stream {} holds the lock on chat {}\n", config_.streamId, config_.chatId);
    // The heartbeat starts at once; a loss arrives on this loop like any completion.
    heartbeat_ = lock_->startHeartbeat([this](const std::string&, const std::string&) {
      lost_ = true;
      fmt::print(stderr, "{}: lock ownership lost: stopping\n", kProgram);
    });
    client_.writeMarker(config_.chatId, config_.streamId, [this](streamlock::Result<bool> marked) {
      if (!marked || !marked.value()) {
        const std::string why = marked ? "no such chat" : marked.error()->what();
        return releaseThen(1, "cannot write the marker: " + why);
      }
      fmt::print("marker written\n");
      produceUntil(Clock::now() + std::chrono::seconds{config_.durationS});
    });
  }

  void produceUntil(Clock::time_point end) {
    if (lost_) return clearThenRelease(4);
    if (Clock::now() >= end) return clearThenRelease(0);
    // The reader's view of this chat, as a chat list would show it: reconciled with the lock.
    streamlock::MarkerCandidate candidate{config_.chatId, config_.streamId};
    client_.reconcileChatStreamMarkers({candidate}, {}, [](streamlock::ReconcileResult result) {
      const auto& marker = result.markers.front();
      fmt::print("reader: {} ({}), stream {}\n", streamlock::toString(marker.state), streamlock::toString(result.status),
                 marker.streamId.value_or("-"));
    });
    loop_.after(std::chrono::milliseconds{1000}, [this, end] { produceUntil(end); });
  }

  void clearThenRelease(int code) {
    heartbeat_.stop();
    client_.clearMarker(config_.chatId, config_.streamId, [this, code](streamlock::Result<bool> cleared) {
      if (!cleared) fmt::print(stderr, "{}: cannot clear the marker: {}\n", kProgram, cleared.error()->what());
      fmt::print("marker {}\n", cleared && cleared.value() ? "cleared" : "left alone");
      releaseThen(code == 0 && !cleared ? 1 : code, {});
    });
  }

  void releaseThen(int code, std::string why) {
    lock_->release([this, code, why](streamlock::ReleaseOutcome outcome) {
      fmt::print("lock release: {}\n", streamlock::toString(outcome));
      finish(code, why);
    });
  }

  void finish(int code, const std::string& why) {
    if (!why.empty()) fmt::print(stderr, "{}: {}\n", kProgram, why);
    exitCode_ = code;
    loop_.stop();
  }

  HostLoop& loop_;
  streamlock::Client& client_;
  const Config& config_;
  std::optional<streamlock::StreamLock> lock_;
  streamlock::Heartbeat heartbeat_;
  bool lost_ = false;
  int exitCode_ = 1;
};

}  // namespace

int main(int argc, char** argv) {
  Config config;
  if (const int code = parse(argc, argv, config); code >= 0) return code;

  HostLoop loop;
  streamlock::Options options;
  options.redis.url = config.redisUrl;
  options.postgres.conninfo = config.databaseUrl;
  options.executor = [&loop](std::function<void()> task) { loop.post(std::move(task)); };
  try {
    streamlock::Client client(options);
    Stream stream(loop, client, config);
    loop.post([&stream] { stream.start(); });
    loop.run();
    // Completions still queued (none here) would run on the executor, whose loop has ended: shut
    // down before the loop object goes away.
    client.shutdown();
    return stream.exitCode();
  } catch (const streamlock::Error& error) {
    fmt::print(stderr, "{}: {}\n", kProgram, error.what());
    return error.code() == streamlock::ErrorCode::InvalidArgument ? 2 : 1;
  }
}
