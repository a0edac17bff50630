#include "redis_server.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "env.h"
#include "process.h"

namespace streamlock::test {

namespace {

// The process id of the redis-server answering on port, or -1 (AUTH first with a password).
long long answeringPid(int port, const std::string& password) {
  timeval timeout{};
  timeout.tv_usec = 200000;
  redisContext* context = redisConnectWithTimeout("127.0.0.1", port, timeout);
  if (context == nullptr) return -1;
  long long pid = -1;
  if (context->err == 0) {
    redisSetTimeout(context, timeout);
    if (!password.empty()) {
      const char* auth[] = {"AUTH", password.c_str()};
      auto* reply = static_cast<redisReply*>(redisCommandArgv(context, 2, auth, nullptr));
      if (reply != nullptr) freeReplyObject(reply);
    }
    const char* argv[] = {"INFO", "server"};
    auto* reply = static_cast<redisReply*>(redisCommandArgv(context, 2, argv, nullptr));
    if (reply != nullptr && reply->type == REDIS_REPLY_STRING) {
      const std::string info(reply->str, reply->len);
      const std::string field = "process_id:";
      if (const auto at = info.find(field); at != std::string::npos) pid = std::stoll(info.substr(at + field.size()));
    }
    if (reply != nullptr) freeReplyObject(reply);
  }
  redisFree(context);
  return pid;
}

}  // namespace

RedisServerProcess::RedisServerProcess(std::vector<std::string> extraArgs)
    : binary_(redisServerBinary()), extraArgs_(std::move(extraArgs)) {
  startOnFreePort();
}

RedisServerProcess::RedisServerProcess(std::string sentinelConfigFile, std::vector<std::string> extraArgs)
    : binary_(redisServerBinary()), sentinelConfig_(std::move(sentinelConfigFile)), extraArgs_(std::move(extraArgs)) {
  startOnFreePort();
}

RedisServerProcess::RedisServerProcess(ClusterNodeTag, std::vector<std::string> extraArgs)
    : binary_(redisServerBinary()), portLimit_(55536), extraArgs_(std::move(extraArgs)) {
  startOnFreePort();
}

std::unique_ptr<RedisServerProcess> RedisServerProcess::clusterNode(std::vector<std::string> extraArgs) {
  return std::unique_ptr<RedisServerProcess>(new RedisServerProcess(ClusterNodeTag{}, std::move(extraArgs)));
}

void RedisServerProcess::startOnFreePort() {
  // A free port can be taken between choosing and binding it: try a few.
  for (int attempt = 0; attempt < 5; ++attempt) {
    do {
      port_ = closedPort();
    } while (port_ >= portLimit_);
    if (spawnAndWait()) return;
  }
  throw std::runtime_error("RedisServerProcess: " + binary_ + " did not start");
}

RedisServerProcess::~RedisServerProcess() {
  if (pid_ > 0) kill();
}

std::string RedisServerProcess::url() const { return "redis://127.0.0.1:" + std::to_string(port_) + "/0"; }

void RedisServerProcess::pause() {
  if (pid_ <= 0 || ::kill(pid_, SIGSTOP) != 0) throw std::runtime_error("RedisServerProcess: cannot pause");
  paused_ = true;
}

void RedisServerProcess::resume() {
  if (pid_ <= 0 || ::kill(pid_, SIGCONT) != 0) throw std::runtime_error("RedisServerProcess: cannot resume");
  paused_ = false;
}

void RedisServerProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);  // also ends a stopped process
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  paused_ = false;
}

void RedisServerProcess::start() {
  if (pid_ > 0) throw std::runtime_error("RedisServerProcess: already running");
  if (!spawnAndWait()) {
    throw std::runtime_error("RedisServerProcess: could not restart on port " + std::to_string(port_));
  }
}

bool RedisServerProcess::spawnAndWait() {
  std::vector<std::string> args{binary_};
  if (!sentinelConfig_.empty()) args.insert(args.end(), {sentinelConfig_, "--sentinel"});
  args.insert(args.end(), {"--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                           "no", "--enable-debug-command", "local"});
  args.insert(args.end(), extraArgs_.begin(), extraArgs_.end());
  // No descriptor of the test leaks into the server, which dies with the test process.
  pid_ = spawnChild(args);
  std::string password;  // the last --requirepass wins, as in redis-server
  for (std::size_t i = 0; i + 1 < extraArgs_.size(); ++i) {
    if (extraArgs_[i] == "--requirepass") password = extraArgs_[i + 1];
  }

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: the port was taken, or a bad argument
      pid_ = -1;
      return false;
    }
    // Another test's server may have taken the port: only our own process counts.
    if (answeringPid(port_, password) == pid_) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill();
  return false;
}

}  // namespace streamlock::test
