// stream_worker: runs one simulated stream for a chat, following the writer protocol:
//   acquire the lock -> write the marker -> heartbeat while producing -> clear the marker -> release.
// --crash-after-s makes it die abruptly (SIGKILL) with its marker left behind, as an OOM kill would.

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <streamlock/client.h>
#include <streamlock/error.h>
#include <streamlock/version.h>

#include "flags.h"
#include "log.h"

namespace {

constexpr const char* kProgram = "stream_worker";

// Exit codes.
constexpr int kDone = 0;
constexpr int kFailed = 1;      // Redis or the database failed
constexpr int kUsage = 2;
constexpr int kLockBusy = 3;    // another stream holds the chat's lock
constexpr int kLost = 4;        // ownership of the lock was lost mid-stream
constexpr int kNoChat = 5;      // no such chat: the marker wrote no row

// While --wait-lock-ms waits for a busy lock, the stop signals are looked at this often.
constexpr std::chrono::milliseconds kWaitSlice{100};

const char* kUsageText = R"(Usage: stream_worker --chat-id UUID [flags]

Runs one simulated stream for a chat with the streamlock writer protocol.

  --chat-id UUID            the chat to stream into (required)
  --stream-id ID            this stream's id (default: a random UUID)
  --database-url URL        PostgreSQL URL or conninfo (default: $DATABASE_URL); required
  --redis-url URL           Redis URL: redis://, rediss:// for TLS, redis-sentinel:// or
                            redis-cluster:// (see the README; default: $REDIS_URL);
                            without one the lock is process-local
  --redis-tls-ca FILE       PEM CA certificates of the Redis server (default: the system's store)
  --redis-tls-cert FILE     client certificate (PEM), for a Redis that requires one
  --redis-tls-key FILE      its private key (PEM)
  --duration-s N            how long to "generate" (default 30)
  --lock-ttl-s N            lock TTL in seconds, at least 2; the heartbeat runs every TTL/3
                            (default 60)
  --wait-lock-ms N          how long to wait for a busy lock (default 0); SIGINT or SIGTERM
                            ends the wait at once (exit 0)
  --crash-after-s N         die with SIGKILL after N seconds, leaving the marker behind
  --log-format text|json    output lines as text (default) or one JSON object each
  --version                 print the version
  --help                    show this text

Exit codes: 0 done, 1 Redis or database failure, 2 usage, 3 lock busy, 4 lock ownership lost,
5 no such chat.

)";

// The flags that STREAMLOCK_* variables can set (all but --help and --version).
const std::vector<examples::FlagSpec> kEnvironmentFlags{
    {"--chat-id", true},    {"--stream-id", true},   {"--database-url", true},  {"--redis-url", true},
    {"--redis-tls-ca", true}, {"--redis-tls-cert", true}, {"--redis-tls-key", true},
    {"--duration-s", true}, {"--lock-ttl-s", true},  {"--wait-lock-ms", true},  {"--crash-after-s", true},
    {"--log-format", true},
};

using streamlock::LogLevel;
using examples::LogFields;
using examples::LogStream;

// A progress line on stdout: `text` in text format, event and fields in JSON.
void report(const char* event, const std::string& text, LogFields fields = {}) {
  examples::logLine(LogLevel::Info, event, text, fields, LogStream::Stdout);
}

// A failure on stderr: "stream_worker: <message>" in text.
void complain(const char* event, const std::string& message, LogFields fields = {}) {
  if (!fields.is_object()) fields = LogFields::object();
  fields["message"] = message;
  examples::logLine(LogLevel::Error, event, fmt::format("{}: {}", kProgram, message), fields);
}

struct WorkerConfig {
  std::string chatId;
  std::string streamId;
  std::string databaseUrl;
  std::string redisUrl;
  std::string redisTlsCa;
  std::string redisTlsCert;
  std::string redisTlsKey;
  long durationS = 30;
  long lockTtlS = 60;
  long waitLockMs = 0;
  std::optional<long> crashAfterS;
  examples::LogFormat logFormat = examples::LogFormat::Text;
};

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

std::string randomUuid() {
  std::random_device random;
  std::uniform_int_distribution<unsigned> byte(0, 255);
  std::string uuid;
  for (int i = 0; i < 16; ++i) {
    unsigned value = byte(random);
    if (i == 6) value = (value & 0x0fu) | 0x40u;  // version 4
    if (i == 8) value = (value & 0x3fu) | 0x80u;  // RFC 4122 variant
    if (i == 4 || i == 6 || i == 8 || i == 10) uuid += '-';
    uuid += fmt::format("{:02x}", value);
  }
  return uuid;
}

bool parseSeconds(std::string_view text, long& out, long minimum) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc{} && ptr == end && out >= minimum && out <= 86400L * 7;
}

// nullopt after printing why (or the help text or the version, with *exitCode 0).
std::optional<WorkerConfig> parseFlags(int argc, char** argv, int* exitCode) {
  WorkerConfig config;
  config.databaseUrl = environment("DATABASE_URL");
  config.redisUrl = environment("REDIS_URL");
  *exitCode = kUsage;
  std::vector<std::string> fromEnvironment;
  std::string environmentError;
  if (!examples::flagsFromEnvironment(kEnvironmentFlags, environment, argc, argv, fromEnvironment, environmentError)) {
    complain("bad_flag", environmentError + " (see --help)");
    return std::nullopt;
  }
  examples::FlagReader flags(argc, argv, std::move(fromEnvironment));
  while (flags.next()) {
    const std::string_view arg = flags.name();
    std::string_view value;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsageText, stdout);
      std::fputs(examples::environmentHelp(kEnvironmentFlags).c_str(), stdout);
      std::fputs("  DATABASE_URL, REDIS_URL       read when neither the flag nor its STREAMLOCK_ variable is set\n",
                 stdout);
      *exitCode = kDone;
      return std::nullopt;
    }
    if (arg == "--version") {
      fmt::print("{} {}\n", kProgram, STREAMLOCK_VERSION_STRING);
      *exitCode = kDone;
      return std::nullopt;
    }
    // Every other flag takes a value: an unknown one is named as unknown, even as the last argument.
    const bool known = std::any_of(kEnvironmentFlags.begin(), kEnvironmentFlags.end(),
                                   [&](const examples::FlagSpec& spec) { return spec.flag == arg; });
    if (!known) {
      complain("bad_flag", fmt::format("unknown flag {} (see --help)", arg));
      return std::nullopt;
    }
    if (!flags.takeValue(value)) {
      complain("bad_flag", flags.source() + " needs a value (see --help)");
      return std::nullopt;
    }
    long number = 0;
    bool ok = true;
    if (arg == "--chat-id") {
      config.chatId = std::string(value);
    } else if (arg == "--stream-id") {
      config.streamId = std::string(value);
    } else if (arg == "--database-url") {
      config.databaseUrl = std::string(value);
    } else if (arg == "--redis-url") {
      config.redisUrl = std::string(value);
    } else if (arg == "--redis-tls-ca") {
      config.redisTlsCa = std::string(value);
    } else if (arg == "--redis-tls-cert") {
      config.redisTlsCert = std::string(value);
    } else if (arg == "--redis-tls-key") {
      config.redisTlsKey = std::string(value);
    } else if (arg == "--duration-s") {
      ok = parseSeconds(value, config.durationS, 0);
    } else if (arg == "--lock-ttl-s") {
      ok = parseSeconds(value, config.lockTtlS, 2);  // an extend answered (1 s) with 500 ms to spare
    } else if (arg == "--wait-lock-ms") {
      ok = parseSeconds(value, config.waitLockMs, 0);
    } else if (arg == "--crash-after-s") {
      ok = parseSeconds(value, number, 0);
      config.crashAfterS = number;
    } else if (arg == "--log-format") {
      ok = examples::parseLogFormat(value, config.logFormat);
      if (ok) examples::setLogFormat(config.logFormat);  // for the messages below
    } else {
      complain("bad_flag", fmt::format("unknown flag {} (see --help)", arg));
      return std::nullopt;
    }
    if (!ok) {
      complain("bad_flag", fmt::format("invalid value for {} (see --help)", flags.source()));
      return std::nullopt;
    }
  }
  if (config.chatId.empty() || config.databaseUrl.empty()) {
    complain("bad_flag", "--chat-id and a database (--database-url, STREAMLOCK_DATABASE_URL or DATABASE_URL) are required");
    return std::nullopt;
  }
  if (config.streamId.empty()) config.streamId = randomUuid();
  return config;
}

[[noreturn]] void crash() {
  report("crashing", "crashing now: no marker clear, no lock release (as after an OOM kill)");
  raise(SIGKILL);
  std::_Exit(137);
}

// Waits up to `timeout` for SIGINT or SIGTERM; returns the signal, or 0.
int waitForSignal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  const auto ms = timeout.count();
  timespec wait{};
  wait.tv_sec = static_cast<time_t>(ms / 1000);
  wait.tv_nsec = static_cast<long>((ms % 1000) * 1000000);
  const int signal = sigtimedwait(&signals, nullptr, &wait);
  return signal > 0 ? signal : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int exitCode = kUsage;
  const auto parsed = parseFlags(argc, argv, &exitCode);
  if (!parsed) return exitCode;
  const WorkerConfig& config = *parsed;

  // SIGINT/SIGTERM end the stream early but cleanly; blocked before the heartbeat thread starts.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGINT);
  sigaddset(&stopSignals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);

  streamlock::Options options;
  options.redis.url = config.redisUrl;
  options.redis.tls.caFile = config.redisTlsCa;
  options.redis.tls.certFile = config.redisTlsCert;
  options.redis.tls.keyFile = config.redisTlsKey;
  options.postgres.conninfo = config.databaseUrl;
  options.postgres.poolSize = 2;
  options.lock.ttl = std::chrono::seconds{config.lockTtlS};
  // A writer can wait longer for a connection than a reader's 250 ms lookup deadline.
  options.redis.connectTimeout = options.redis.commandTimeout;
  options.logger = examples::logFromLibrary;

  try {
    streamlock::Client client(options);

    // 1. The lock (and the pending-map entry). A busy lock is waited for in short slices, with the
    // stop signals looked at between them: SIGINT or SIGTERM during the wait ends it at once, and a
    // worker told to stop never starts a stream (a lock taken as the signal came is released unused).
    std::optional<streamlock::StreamLock> lock;
    int stopSignal = 0;
    const auto waitUntil = std::chrono::steady_clock::now() + std::chrono::milliseconds{config.waitLockMs};
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(waitUntil - std::chrono::steady_clock::now());
      const auto slice = std::clamp(left, std::chrono::milliseconds{0}, kWaitSlice);
      lock = client.acquireStreamLock(config.chatId, config.streamId, slice);
      stopSignal = waitForSignal(stopSignals, std::chrono::milliseconds{0});
      if (lock || stopSignal != 0 || left <= slice) break;
    }
    if (stopSignal != 0) {
      const char* name = stopSignal == SIGINT ? "SIGINT" : "SIGTERM";
      report("stopping", fmt::format("stopping on {} before the stream started", name), {{"signal", name}});
      if (lock) {
        const char* outcome = streamlock::toString(lock->release());
        report("lock_released", fmt::format("lock release: {}", outcome), {{"outcome", outcome}});
      }
      return kDone;
    }
    if (!lock) {
      complain("lock_busy", fmt::format("chat {} already has an active stream", config.chatId),
               {{"chat_id", config.chatId}});
      return kLockBusy;
    }
    report("lock_acquired",
           fmt::format("stream {} holds the lock on chat {} (ttl {} s)", config.streamId, config.chatId,
                       config.lockTtlS),
           {{"stream_id", config.streamId}, {"chat_id", config.chatId}, {"ttl_s", config.lockTtlS}});

    // 3. The heartbeat starts at once, so that a slow marker write cannot outlast the TTL; ownership
    // lost means stop producing.
    // Shared with the callback: a loss reported just before the heartbeat stops may run on the
    // callback thread after this scope has ended.
    const auto lost = std::make_shared<std::atomic<bool>>(false);
    auto heartbeat = lock->startHeartbeat([lost](const std::string&, const std::string&) { *lost = true; });

    // 2. The marker. If it cannot be written, give up and release the lock.
    bool marked = false;
    try {
      marked = client.writeMarker(config.chatId, config.streamId);
    } catch (const streamlock::Error& error) {
      complain("marker_failed", fmt::format("cannot write the marker: {}", error.what()));
      lock->release();
      return kFailed;
    }
    if (!marked) {
      complain("no_chat", fmt::format("no chat {}", config.chatId), {{"chat_id", config.chatId}});
      lock->release();
      return kNoChat;
    }
    report("marker_written", fmt::format("marker written: copilot_chats.conversation_id = {}", config.streamId),
           {{"stream_id", config.streamId}, {"chat_id", config.chatId}});

    // Produce while the heartbeat keeps the lock.
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::seconds{config.durationS};
    std::optional<std::chrono::steady_clock::time_point> crashAt;
    if (config.crashAfterS) crashAt = start + std::chrono::seconds{*config.crashAfterS};
    auto nextTick = start + std::chrono::seconds{1};
    while (!*lost && stopSignal == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (crashAt && now >= *crashAt) crash();
      if (now >= end) break;
      if (now >= nextTick) {
        const auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(now - start).count();
        report("generating", fmt::format("generating... {} s", elapsed), {{"elapsed_s", elapsed}});
        nextTick += std::chrono::seconds{1};
      }
      stopSignal = waitForSignal(stopSignals, std::chrono::milliseconds{100});
    }
    heartbeat.stop();
    if (stopSignal != 0) {
      const char* name = stopSignal == SIGINT ? "SIGINT" : "SIGTERM";
      report("stopping", fmt::format("stopping early on {}", name), {{"signal", name}});
    }
    if (*lost) complain("ownership_lost", "lock ownership lost: stopped producing");

    // 4. Clear our own marker (compare-and-clear), 5. release our own lock (compare-and-delete).
    try {
      const bool cleared = client.clearMarker(config.chatId, config.streamId);
      report("marker_cleared", cleared ? "marker cleared" : "marker already changed by someone else: left alone",
             {{"cleared", cleared}});
    } catch (const streamlock::Error& error) {
      complain("marker_failed", fmt::format("cannot clear the marker: {}", error.what()));
      exitCode = kFailed;
    }
    const char* outcome = streamlock::toString(lock->release());
    report("lock_released", fmt::format("lock release: {}", outcome), {{"outcome", outcome}});
    if (*lost) return kLost;
    return exitCode == kFailed ? kFailed : kDone;
  } catch (const streamlock::Error& error) {
    complain("failed", error.what(), {{"code", streamlock::toString(error.code())}});
    return error.code() == streamlock::ErrorCode::InvalidArgument ? kUsage : kFailed;
  }
}
