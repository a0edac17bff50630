#pragma once

// Child processes of the tests' private servers: no descriptor of the test leaks into them (a
// server holding a copy of the library's socket would keep a "closed" connection open), they die
// with the test process (PR_SET_PDEATHSIG), and they can run as the postgres user (initdb and
// postgres refuse root).

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace streamlock::test {

struct SpawnOptions {
  // Run as the "postgres" user when this process is root (initdb, postgres, pg_ctl, pg_basebackup).
  bool asPostgres = false;
  // Where stdout and stderr go (appended); empty: /dev/null.
  std::string outputPath;
};

// Starts argv (argv[0] a path) with stdin from /dev/null and no other descriptor of this process.
// The child gets SIGKILL when the thread that spawned it exits. Throws on failure.
pid_t spawnChild(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Reaps pid if it has exited: its exit code (128 + signal when killed), else nullopt.
std::optional<int> exitedStatus(pid_t pid);

// Waits up to limit for pid to exit: its exit code (128 + signal), or nullopt on timeout.
std::optional<int> waitExit(pid_t pid, std::chrono::milliseconds limit);

// SIGKILLs and reaps pid (nothing when pid <= 0).
void killAndReap(pid_t pid);

// Runs argv to completion within limit; throws with the command, its exit code and the end of
// its output when it fails or times out (then it is killed). The output goes to outputPath (or a
// temporary file).
void runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds limit, SpawnOptions options = {});

// The uid and gid of the postgres user, for files a postgres child must own; nullopt when this
// process is not root (then children run as ourselves).
struct UserIds {
  uid_t uid;
  gid_t gid;
};
std::optional<UserIds> postgresUserWhenRoot();

// A fresh directory under STREAMLOCK_TEST_SCRATCH (else /tmp), mode 0755, named prefix.XXXXXX.
std::string makeScratchDir(const std::string& prefix);

}  // namespace streamlock::test
