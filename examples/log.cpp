#include "log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <iterator>

#include <fmt/format.h>

namespace examples {
namespace {

std::atomic<LogFormat> g_format{LogFormat::Text};

// The whole line in as few write(2) calls as the descriptor takes (one, for a line to a pipe).
void writeAll(LogStream stream, std::string_view line) noexcept {
  const int fd = stream == LogStream::Stdout ? STDOUT_FILENO : STDERR_FILENO;
  while (!line.empty()) {
    const auto n = ::write(fd, line.data(), line.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere left to report it
    line.remove_prefix(static_cast<std::size_t>(n));
  }
}

// This thread's held access-log lines (holdAccessLog).
thread_local bool t_holdAccess = false;
thread_local std::string t_heldAccess;
constexpr std::size_t kMaxHeldAccess = 64 * 1024;

void writeAccess(std::string_view line) {
  if (!t_holdAccess) return writeAll(LogStream::Stderr, line);
  t_heldAccess.append(line);
  if (t_heldAccess.size() >= kMaxHeldAccess) flushAccessLog();
}

long long nowUnixMilliseconds() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::chrono::duration_cast<std::chrono::milliseconds>(now).count();
}

// {"ts":...,"level":...,"event":..., then the fields}, and a newline.
std::string jsonLine(streamlock::LogLevel level, std::string_view event, const LogFields& fields) {
  LogFields line{{"ts", logTimestamp(nowUnixMilliseconds())},
                 {"level", streamlock::toString(level)},
                 {"event", event}};
  if (fields.is_object()) {
    for (const auto& [key, value] : fields.items()) line[key] = value;
  }
  // Invalid UTF-8 (a message quoting bytes it got) becomes U+FFFD instead of an exception.
  return line.dump(-1, ' ', false, LogFields::error_handler_t::replace) + "\n";
}

}  // namespace

bool parseLogFormat(std::string_view text, LogFormat& format) {
  if (text == "text") {
    format = LogFormat::Text;
  } else if (text == "json") {
    format = LogFormat::Json;
  } else {
    return false;
  }
  return true;
}

void setLogFormat(LogFormat format) { g_format.store(format); }

LogFormat logFormat() { return g_format.load(std::memory_order_relaxed); }

std::string logTimestamp(long long unixMilliseconds) {
  const auto seconds = static_cast<time_t>(unixMilliseconds / 1000);
  tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday,
                     utc.tm_hour, utc.tm_min, utc.tm_sec, unixMilliseconds % 1000);
}

void logLine(streamlock::LogLevel level, std::string_view event, std::string_view text, const LogFields& fields,
             LogStream stream) noexcept {
  try {
    if (logFormat() == LogFormat::Json) {
      writeAll(stream, jsonLine(level, event, fields));
    } else {
      std::string line(text);
      line += '\n';
      writeAll(stream, line);
    }
  } catch (...) {
    // Out of memory: the line is lost, the program goes on.
  }
}

void logAccess(std::string_view method, std::string_view route, int status, double seconds) noexcept {
  try {
    if (logFormat() == LogFormat::Json) {
      // Milliseconds rounded to the microsecond, as a number.
      const double milliseconds = static_cast<double>(static_cast<long long>(seconds * 1e6 + 0.5)) / 1000.0;
      writeAccess(jsonLine(streamlock::LogLevel::Info, "access",
                           LogFields{{"method", method}, {"route", route}, {"status", status}, {"duration_ms", milliseconds}}));
      return;
    }
    fmt::memory_buffer line;
    fmt::format_to(std::back_inserter(line), "access method={} route={} status={} duration_ms={:.3f}\n", method, route,
                   status, seconds * 1000.0);
    writeAccess(std::string_view(line.data(), line.size()));
  } catch (...) {
    // As logLine.
  }
}

void holdAccessLog() noexcept { t_holdAccess = true; }

void flushAccessLog() noexcept {
  if (!t_heldAccess.empty()) writeAll(LogStream::Stderr, t_heldAccess);
  t_heldAccess.clear();
}

void logFromLibrary(streamlock::LogLevel level, std::string_view message) noexcept {
  if (level == streamlock::LogLevel::Debug) return;
  if (logFormat() == LogFormat::Text) {
    try {
      streamlock::logToStderr(level, message);
    } catch (...) {
      // As logLine.
    }
    return;
  }
  logLine(level, "streamlock", {}, LogFields{{"message", message}});
}

}  // namespace examples
