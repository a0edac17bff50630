#include "process.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "env.h"

namespace streamlock::test {

std::optional<UserIds> postgresUserWhenRoot() {
  if (::geteuid() != 0) return std::nullopt;
  const passwd* user = ::getpwnam("postgres");
  if (user == nullptr) throw std::runtime_error("running as root, but there is no postgres user to run PostgreSQL as");
  return UserIds{user->pw_uid, user->pw_gid};
}

pid_t spawnChild(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) throw std::runtime_error("spawnChild: no command");
  std::vector<std::string> args = argv;
  std::vector<char*> pointers;
  for (auto& arg : args) pointers.push_back(arg.data());
  pointers.push_back(nullptr);
  const std::optional<UserIds> user = options.asPostgres ? postgresUserWhenRoot() : std::nullopt;
  const std::string output = options.outputPath.empty() ? std::string("/dev/null") : options.outputPath;

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("spawnChild: fork failed");
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0) ::_exit(126);
    ::dup2(in, STDIN_FILENO);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::close_range(3, ~0U, 0);
    if (user) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(user->gid) != 0 || ::setuid(user->uid) != 0) ::_exit(126);
    }
    // After the credential change, which clears it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::execv(pointers[0], pointers.data());
    ::_exit(127);
  }
  return pid;
}

namespace {
int decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string tail(const std::string& path, std::size_t bytes = 2000) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  const std::string all = text.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}
}  // namespace

std::optional<int> exitedStatus(pid_t pid) {
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) < 0 && errno == EINTR) {
  }
  if (done == pid) return decode(status);
  return std::nullopt;
}

std::optional<int> waitExit(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (auto status = exitedStatus(pid)) return status;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void killAndReap(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

void runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds limit, SpawnOptions options) {
  std::string ownOutput;
  if (options.outputPath.empty()) {
    ownOutput = makeScratchDir("cmd") + "/output";
    options.outputPath = ownOutput;
  }
  std::string command;
  for (const auto& arg : argv) command += (command.empty() ? "" : " ") + arg;
  const pid_t pid = spawnChild(argv, options);
  const auto status = waitExit(pid, limit);
  if (!status) {
    killAndReap(pid);
    throw std::runtime_error("`" + command + "` did not finish within " + std::to_string(limit.count()) +
                             " ms; its output ends with:\n" + tail(options.outputPath));
  }
  if (*status != 0) {
    throw std::runtime_error("`" + command + "` failed with exit code " + std::to_string(*status) +
                             "; its output ends with:\n" + tail(options.outputPath));
  }
  if (!ownOutput.empty()) {
    std::remove(ownOutput.c_str());
    ::rmdir(ownOutput.substr(0, ownOutput.rfind('/')).c_str());
  }
}

std::string makeScratchDir(const std::string& prefix) {
  const char* scratch = std::getenv("STREAMLOCK_TEST_SCRATCH");
  std::string base = scratch != nullptr && *scratch != '\0' ? scratch : "/tmp";
  std::string path = base + "/" + prefix + ".XXXXXX";
  if (::mkdtemp(path.data()) == nullptr) throw std::runtime_error("mkdtemp under " + base + " failed");
  ::chmod(path.c_str(), 0755);
  return path;
}

}  // namespace streamlock::test
