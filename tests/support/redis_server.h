#pragma once

// A private redis-server for tests that break it (pause, kill, restart) or count its commands,
// or that need it to speak TLS.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace streamlock::test {

// A TLS-only server (--port 0 --tls-port P): its certificate and key, the CA its clients'
// certificates are checked against, and whether clients must present one (tls-auth-clients).
// TlsCertificates::redisTls (tls_certs.h) fills it in.
struct RedisTls {
  std::string certFile;
  std::string keyFile;
  std::string caFile;
  bool authClients = false;
  // What the readiness check (redis-cli --tls) presents when authClients.
  std::string clientCertFile;
  std::string clientKeyFile;
};

class RedisServerProcess {
 public:
  // Starts STREAMLOCK_TEST_REDIS_SERVER on a free port of 127.0.0.1 and waits until it answers
  // (INFO names its process). extraArgs are appended to the command line.
  explicit RedisServerProcess(std::vector<std::string> extraArgs = {});
  // The same, TLS only: the port speaks TLS and nothing else; the readiness check goes over TLS
  // (redis-cli --tls, without verifying the server's certificate: it only asks who answers).
  // A factory rather than a constructor, so that RedisServerProcess({"--arg", "value"}) stays
  // unambiguous. Usage: auto server = RedisServerProcess::withTls(testCertificates().redisTls());
  static RedisServerProcess withTls(RedisTls tls, std::vector<std::string> extraArgs = {});
  // The same in sentinel mode (redis-server CONFIG --sentinel ...): configFile must be writable,
  // sentinel rewrites it.
  RedisServerProcess(std::string sentinelConfigFile, std::vector<std::string> extraArgs);
  // A cluster node: a port below 55536, since its cluster bus listens on port + 10000.
  static std::unique_ptr<RedisServerProcess> clusterNode(std::vector<std::string> extraArgs);
  ~RedisServerProcess();  // kills it
  RedisServerProcess(const RedisServerProcess&) = delete;
  RedisServerProcess& operator=(const RedisServerProcess&) = delete;

  int port() const noexcept { return port_; }
  bool tls() const noexcept { return tls_; }
  // redis://127.0.0.1:<port>/0, or rediss://127.0.0.1:<port>/0 in TLS mode
  std::string url() const;

  void pause();   // SIGSTOP: connections stay open, nothing answers
  void resume();  // SIGCONT
  void kill();    // SIGKILL and reap: the port refuses connections
  void start();   // starts again on the same port and waits until it answers
  bool running() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }

 private:
  struct TlsTag {};
  RedisServerProcess(TlsTag, RedisTls tls, std::vector<std::string> extraArgs);
  void startOnFreePort();
  bool spawnAndWait();
  long long answeringPid() const;
  struct ClusterNodeTag {};
  RedisServerProcess(ClusterNodeTag, std::vector<std::string> extraArgs);
  std::string binary_;
  std::string sentinelConfig_;  // empty: a plain redis-server
  int portLimit_ = 65536;       // ports chosen below this
  std::vector<std::string> extraArgs_;
  bool tls_ = false;
  RedisTls tlsFiles_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool paused_ = false;
};

}  // namespace streamlock::test
