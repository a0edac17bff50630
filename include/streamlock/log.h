#pragma once

/// @file
/// Where the library's log lines go: a Logger callback.

#include <functional>
#include <string_view>

namespace streamlock {

/// How much a log message matters.
enum class LogLevel {
  Debug,    ///< detail for debugging (e.g. a failed health-check PING); logToStderr drops it
  Info,     ///< a normal event worth a line (e.g. stale markers repaired)
  Warning,  ///< a degraded answer or a failure that was handled (e.g. a lookup answered unknown)
  Error,    ///< an unexpected failure
};

/// "debug", "info", "warning" or "error".
const char* toString(LogLevel level) noexcept;

/// Receives one message per event, without a trailing newline. It may be called from any thread,
/// including the heartbeat thread, and must not call back into the Client that logs.
using Logger = std::function<void(LogLevel level, std::string_view message)>;

/// The default logger: one line "streamlock <level>: <message>" to stderr, Info and above.
void logToStderr(LogLevel level, std::string_view message);

}  // namespace streamlock
