#pragma once

// Commands the tests run (openssl, redis-cli) and background helpers (openssl s_server), on top of
// process.h (which starts every child the same way: stdin from /dev/null, none of the test's other
// descriptors, dying with the test).

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "process.h"

namespace streamlock::test {

// The path of an executable: name itself when it holds a '/', else the first match in PATH.
// Throws std::runtime_error when there is none.
std::string findExecutable(const std::string& name);

struct ProcessResult {
  int exitCode = -1;       // -1 when killed by a signal (or at the timeout)
  bool timedOut = false;
  std::string output;      // stdout and stderr, interleaved
};

// Runs argv[0] (looked up in PATH) to completion and collects its output; kills it at timeout.
ProcessResult runProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// A process that runs until this object is destroyed (SIGKILL), with its output in a file.
class BackgroundProcess {
 public:
  // argv[0] is looked up in PATH; outputFile empty: /dev/null.
  explicit BackgroundProcess(std::vector<std::string> argv, const std::string& outputFile = {});
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // False once it has exited (it is then reaped).
  bool running();

 private:
  pid_t pid_ = -1;
};

}  // namespace streamlock::test
