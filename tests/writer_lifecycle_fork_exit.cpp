// writer_lifecycle_fork_exit: a writer process whose Client has static storage duration, for
// [case 3] of tests/test_writer_lifecycle.cpp. On the test's word it forks, and the child calls
// exit(), as a child does after a failed execvp: the static destructors run in the child, the
// parent's Client's among them. The child must send nothing to Redis or PostgreSQL, join no thread,
// and leave the parent's lock, heartbeat and connections as they were.
//
// Usage: writer_lifecycle_fork_exit REDIS_URL DATABASE_URL KEY_PREFIX CHAT_ID STREAM_ID HEARTBEAT_MS
// A line protocol on stdin/stdout, driven by the test:
//   -> ready <backend pid of the pooled PostgreSQL connection>   (the lock is held, heartbeat on)
//   <- fork
//   -> child exited|signalled|hung <exit status|signal|-1> ms <how long the child took>
//   <- check
//   -> check pg <backend pid now> extended <heartbeatsExtended> lost <0|1> running <0|1>
//   <- quit
// then it returns from main (the Client is destroyed normally and releases the lock), exit 0.
// Exit status 2: a usage or setup error, or an unexpected line (the reason on stderr).
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "streamlock/client.h"
#include "streamlock/error.h"

namespace {

// Static storage duration: exit() runs its destructor, in a child too.
std::optional<streamlock::Client> client;

[[noreturn]] void fail(const std::string& why) {
  std::cerr << "writer_lifecycle_fork_exit: " << why << std::endl;
  std::exit(2);
}

void expect(const char* command) {
  std::string line;
  if (!std::getline(std::cin, line)) fail(std::string("expected \"") + command + "\", got end of input");
  if (line != command) fail(std::string("expected \"") + command + "\", got \"" + line + "\"");
}

std::string backendPid() {
  return std::string(client->postgres()->execute("SELECT pg_backend_pid()").value(0, 0));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) fail("usage: writer_lifecycle_fork_exit REDIS_URL DATABASE_URL KEY_PREFIX CHAT_ID STREAM_ID HEARTBEAT_MS");
  try {
    streamlock::Options options;
    options.redis.url = argv[1];
    options.postgres.conninfo = argv[2];
    options.postgres.poolSize = 1;  // one pooled connection: the same backend answers before and after
    options.lock.keyPrefix = argv[3];
    options.lock.heartbeatInterval = streamlock::Milliseconds{std::stoll(argv[6])};
    client.emplace(options);
    const std::string pgBefore = backendPid();

    auto lock = client->acquireStreamLock(argv[4], argv[5]);
    if (!lock) fail("the chat is busy");
    auto heartbeat = lock->startHeartbeat();
    // std::endl flushes: nothing stays buffered for the child's exit() to write a second time.
    std::cout << "ready " << pgBefore << std::endl;

    expect("fork");
    const auto start = std::chrono::steady_clock::now();
    const pid_t pid = ::fork();
    if (pid < 0) fail("fork failed");
    if (pid == 0) std::exit(0);  // the child: static destructors run, the Client's among them

    int status = 0;
    bool ended = false;
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        ended = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    if (!ended) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      std::cout << "child hung -1";
    } else if (WIFEXITED(status)) {
      std::cout << "child exited " << WEXITSTATUS(status);
    } else {
      std::cout << "child signalled " << (WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    }
    std::cout << " ms " << ms.count() << std::endl;

    expect("check");
    const auto counters = client->counters();
    const std::string pgAfter = backendPid();
    std::cout << "check pg " << pgAfter << " extended " << counters.heartbeatsExtended << " lost "
              << (heartbeat.ownershipLost() ? 1 : 0) << " running " << (heartbeat.running() ? 1 : 0) << std::endl;

    expect("quit");
  } catch (const std::exception& e) {
    fail(e.what());
  }
  return 0;
}
