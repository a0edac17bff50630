#pragma once

#include <functional>
#include <string_view>

namespace streamlock {

enum class LogLevel { Debug, Info, Warning, Error };

const char* toString(LogLevel level) noexcept;

// Receives one message per event, without a trailing newline. It may be called from any thread,
// including the heartbeat thread, and must not call back into the Client that logs.
using Logger = std::function<void(LogLevel level, std::string_view message)>;

// The default logger: one line "streamlock <level>: <message>" to stderr, Info and above.
void logToStderr(LogLevel level, std::string_view message);

}  // namespace streamlock
