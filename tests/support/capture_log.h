#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "streamlock/log.h"

namespace streamlock::test {

// Keeps what the library logs, so tests stay quiet and can check what was said.
class CapturedLog {
 public:
  // A Logger that appends to this log; the log must outlive the Client using it.
  Logger logger();
  std::vector<std::string> messages() const;
  bool contains(const std::string& text) const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> messages_;
};

}  // namespace streamlock::test
