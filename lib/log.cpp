#include "streamlock/log.h"

#include <cstdio>
#include <string>

namespace streamlock {

const char* toString(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warning: return "warning";
    case LogLevel::Error: return "error";
  }
  return "?";
}

void logToStderr(LogLevel level, std::string_view message) {
  if (level == LogLevel::Debug) return;
  // One write per line so that lines of concurrent threads do not interleave.
  std::string line = "streamlock ";
  line += toString(level);
  line += ": ";
  line += message;
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace streamlock
