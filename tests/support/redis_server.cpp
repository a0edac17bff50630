#include "redis_server.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "env.h"
#include "process.h"
#include "subprocess.h"

namespace streamlock::test {

namespace {

using namespace std::chrono_literals;

long long pidInInfo(const std::string& info) {
  const std::string field = "process_id:";
  const auto at = info.find(field);
  if (at == std::string::npos) return -1;
  try {
    return std::stoll(info.substr(at + field.size()));
  } catch (const std::exception&) {
    return -1;
  }
}

// The process id of the plaintext redis-server answering on port, or -1 (AUTH first with a password).
long long plaintextAnsweringPid(int port, const std::string& password) {
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
    if (reply != nullptr && reply->type == REDIS_REPLY_STRING) pid = pidInInfo(std::string(reply->str, reply->len));
    if (reply != nullptr) freeReplyObject(reply);
  }
  redisFree(context);
  return pid;
}

// The same over TLS, with the redis-cli next to the redis-server binary (hiredis 0.14 has no TLS).
long long tlsAnsweringPid(const std::string& serverBinary, int port, const RedisTls& tls) {
  const auto slash = serverBinary.rfind('/');
  const std::string cli = slash == std::string::npos ? "redis-cli" : serverBinary.substr(0, slash + 1) + "redis-cli";
  std::vector<std::string> argv{cli, "--tls", "--insecure", "-h", "127.0.0.1", "-p", std::to_string(port)};
  if (tls.authClients) {
    for (const auto& arg : {std::string("--cert"), tls.clientCertFile, std::string("--key"), tls.clientKeyFile}) {
      argv.push_back(arg);
    }
  }
  argv.emplace_back("INFO");
  argv.emplace_back("server");
  const ProcessResult result = runProcess(argv, 2s);
  return result.exitCode == 0 ? pidInInfo(result.output) : -1;
}

}  // namespace

RedisServerProcess::RedisServerProcess(std::vector<std::string> extraArgs)
    : binary_(redisServerBinary()), extraArgs_(std::move(extraArgs)) {
  startOnFreePort();
}

RedisServerProcess::RedisServerProcess(TlsTag, RedisTls tls, std::vector<std::string> extraArgs)
    : binary_(redisServerBinary()), extraArgs_(std::move(extraArgs)), tls_(true), tlsFiles_(std::move(tls)) {
  startOnFreePort();
}

RedisServerProcess RedisServerProcess::withTls(RedisTls tls, std::vector<std::string> extraArgs) {
  return RedisServerProcess(TlsTag{}, std::move(tls), std::move(extraArgs));
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
  throw std::runtime_error("RedisServerProcess: " + binary_ + " did not start" + (tls_ ? " (TLS)" : ""));
}

RedisServerProcess::~RedisServerProcess() {
  if (pid_ > 0) kill();
}

std::string RedisServerProcess::url() const {
  return std::string(tls_ ? "rediss" : "redis") + "://127.0.0.1:" + std::to_string(port_) + "/0";
}

long long RedisServerProcess::answeringPid() const {
  if (tls_) return tlsAnsweringPid(binary_, port_, tlsFiles_);
  std::string password;  // the last --requirepass wins, as in redis-server
  for (std::size_t i = 0; i + 1 < extraArgs_.size(); ++i) {
    if (extraArgs_[i] == "--requirepass") password = extraArgs_[i + 1];
  }
  return plaintextAnsweringPid(port_, password);
}

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
  killAndReap(pid_);  // SIGKILL also ends a stopped process
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
  if (tls_) {
    for (const auto& arg : {std::string("--port"), std::string("0"), std::string("--tls-port"), std::to_string(port_),
                            std::string("--tls-cert-file"), tlsFiles_.certFile, std::string("--tls-key-file"),
                            tlsFiles_.keyFile, std::string("--tls-ca-cert-file"), tlsFiles_.caFile,
                            std::string("--tls-auth-clients"), std::string(tlsFiles_.authClients ? "yes" : "no")}) {
      args.push_back(arg);
    }
  } else {
    args.insert(args.end(), {"--port", std::to_string(port_)});
  }
  args.insert(args.end(), {"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--enable-debug-command", "local"});
  args.insert(args.end(), extraArgs_.begin(), extraArgs_.end());
  // No descriptor of the test leaks into the server, which dies with the test process.
  pid_ = spawnChild(args);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // exited: the port was taken, or a bad argument
      pid_ = -1;
      return false;
    }
    // Another test's server may have taken the port: only our own process counts.
    if (answeringPid() == pid_) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill();
  return false;
}

}  // namespace streamlock::test
