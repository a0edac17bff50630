#pragma once

// A private redis-server for tests that break it (pause, kill, restart) or count its commands.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace streamlock::test {

class RedisServerProcess {
 public:
  // Starts STREAMLOCK_TEST_REDIS_SERVER on a free port of 127.0.0.1 and waits until it answers
  // (INFO names its process). extraArgs are appended to the command line.
  explicit RedisServerProcess(std::vector<std::string> extraArgs = {});
  // The same in sentinel mode (redis-server CONFIG --sentinel ...): configFile must be writable,
  // sentinel rewrites it.
  RedisServerProcess(std::string sentinelConfigFile, std::vector<std::string> extraArgs);
  // A cluster node: a port below 55536, since its cluster bus listens on port + 10000.
  static std::unique_ptr<RedisServerProcess> clusterNode(std::vector<std::string> extraArgs);
  ~RedisServerProcess();  // kills it
  RedisServerProcess(const RedisServerProcess&) = delete;
  RedisServerProcess& operator=(const RedisServerProcess&) = delete;

  int port() const noexcept { return port_; }
  // redis://127.0.0.1:<port>/0
  std::string url() const;

  void pause();   // SIGSTOP: connections stay open, nothing answers
  void resume();  // SIGCONT
  void kill();    // SIGKILL and reap: the port refuses connections
  void start();   // starts again on the same port and waits until it answers
  bool running() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }

 private:
  bool spawnAndWait();
  void startOnFreePort();
  struct ClusterNodeTag {};
  RedisServerProcess(ClusterNodeTag, std::vector<std::string> extraArgs);
  std::string binary_;
  std::string sentinelConfig_;  // empty: a plain redis-server
  int portLimit_ = 65536;       // ports chosen below this
  std::vector<std::string> extraArgs_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool paused_ = false;
};

}  // namespace streamlock::test
