#pragma once

// A private Sentinel setup that a test may break: a master, its replicas and three sentinels
// (quorum 2) on free ports of 127.0.0.1, killed with the test process. About 2-3 s to start: the
// sentinels find each other through the master's hello channel every 2 s.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "redis_client.h"
#include "redis_server.h"

namespace streamlock::test {

class SentinelSetup {
 public:
  struct Settings {
    std::string name = "private-master";
    int replicas = 2;
    int downAfterMs = 1000;
    int failoverTimeoutMs = 5000;
  };
  SentinelSetup();
  explicit SentinelSetup(Settings settings);
  ~SentinelSetup();
  SentinelSetup(const SentinelSetup&) = delete;
  SentinelSetup& operator=(const SentinelSetup&) = delete;

  const std::string& name() const noexcept { return settings_.name; }
  // redis-sentinel://[userinfo@]127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3[/db]?master=NAME
  std::string url(const std::string& userinfo = {}, const std::string& db = {}) const;
  std::vector<int> sentinelPorts() const;
  RedisServerProcess& sentinel(std::size_t index) { return *sentinels_.at(index); }
  // The master and the replicas as started (ports stay the same across failovers and restarts).
  int initialMasterPort() const { return servers_.front()->port(); }
  std::vector<int> serverPorts() const;
  RedisServerProcess& server(int port);

  // A command on one server or sentinel (cached connection, replaced once when broken).
  Reply command(int port, const std::vector<std::string>& argv);
  void forget(int port);
  // "master", "slave" (ROLE's first element), or "down" when it does not answer.
  std::string role(int port);
  // The master's port as the first answering sentinel names it.
  int masterPortBySentinels();

  // Waits until every running sentinel names a master other than oldMasterPort and that server
  // answers ROLE master; returns its port. Throws after limit.
  int waitForNewMaster(int oldMasterPort, std::chrono::milliseconds limit);
  // Waits until every running sentinel sees the current master up with `replicas` replicas and the
  // two other sentinels, and those replicas are linked. Throws after limit.
  void waitSettled(std::chrono::milliseconds limit, std::optional<int> replicas = std::nullopt);

 private:
  Settings settings_;
  std::string dir_;
  std::vector<std::unique_ptr<RedisServerProcess>> servers_;    // [0] the initial master
  std::vector<std::unique_ptr<RedisServerProcess>> sentinels_;
  std::map<int, std::unique_ptr<TestRedis>> connections_;
};

}  // namespace streamlock::test
