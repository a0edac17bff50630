#include "capture_log.h"

namespace streamlock::test {

Logger CapturedLog::logger() {
  return [this](LogLevel level, std::string_view message) {
    const std::lock_guard<std::mutex> lock(mutex_);
    messages_.push_back(std::string(toString(level)) + ": " + std::string(message));
  };
}

std::vector<std::string> CapturedLog::messages() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return messages_;
}

bool CapturedLog::contains(const std::string& text) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& message : messages_) {
    if (message.find(text) != std::string::npos) return true;
  }
  return false;
}

}  // namespace streamlock::test
