#pragma once

// Redis Cluster for the tests: the key hash slot (CRC16 with hash tags, as the cluster
// specification defines it), a view of a cluster's topology with helpers that write and read keys
// on the slot's own master (the tests' oracle, independent of the library), and a private
// 6-node cluster (3 masters, 3 replicas) that a test may break: fail over, kill, pause, migrate.

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "redis_client.h"
#include "redis_server.h"

namespace streamlock::test {

constexpr unsigned kClusterSlots = 16384;

// CRC16-XMODEM of the key, or of the text inside its first non-empty {...}, modulo 16384.
unsigned keySlot(std::string_view key);

// A chat id "<stem>-<n>" whose lock key prefix + id hashes to slot (searched from n = 0).
std::string chatIdInSlot(const std::string& prefix, unsigned slot, const std::string& stem);

struct ClusterNode {
  std::string id;
  int port = 0;
  bool master = false;
  bool failed = false;   // flagged fail or fail? by the node asked
  std::string masterId;  // a replica's master
  std::vector<std::pair<unsigned, unsigned>> slots;  // ranges served (masters)
};

// A cluster as CLUSTER NODES describes it, and the tests' own cluster-aware reads and writes
// (straight to the slot's master, one refresh and retry on MOVED). All nodes are on 127.0.0.1.
class ClusterView {
 public:
  explicit ClusterView(std::vector<int> seedPorts, std::string password = {});
  ~ClusterView();
  ClusterView(const ClusterView&) = delete;
  ClusterView& operator=(const ClusterView&) = delete;

  // Reads CLUSTER NODES from the first seed that answers; throws when none does.
  void refresh();
  const std::vector<ClusterNode>& nodes() const noexcept { return nodes_; }
  // Masters that serve slots, in the order of their first slot.
  std::vector<int> masterPorts() const;
  int masterOf(unsigned slot) const;
  int masterOfKey(const std::string& key) const { return masterOf(keySlot(key)); }
  // A replica of the master on masterPort (throws when it has none).
  int replicaOf(int masterPort) const;
  std::string idOf(int port) const;
  int portOf(const std::string& id) const;
  // The slot ranges of the master on port.
  std::vector<std::pair<unsigned, unsigned>> slotsOf(int port) const;

  // A command on one node, on a cached connection (a broken one is replaced once).
  Reply command(int port, const std::vector<std::string>& argv);
  // Drops the cached connection to port (e.g. after killing that node).
  void forget(int port);
  // A numeric field of INFO <section> on one node, e.g. ("stats", "total_reads_processed").
  long long infoField(int port, const std::string& section, const std::string& field);
  // INFO commandstats of one node: command -> calls.
  std::map<std::string, long long> commandCalls(int port);

  // The oracle's writes and reads, on the key's master.
  void set(const std::string& key, const std::string& value, long long ttlMs = 0);
  // Every pair, pipelined per master (one round trip per master); PX ttlMs when positive.
  void setMany(const std::vector<std::pair<std::string, std::string>>& pairs, long long ttlMs = 0);
  std::optional<std::string> get(const std::string& key);
  long long pttl(const std::string& key);
  long long del(const std::string& key);
  // GET on a replica (READONLY first); nullopt for a missing key.
  std::optional<std::string> getOnReplica(int replicaPort, const std::string& key);
  // KEYS pattern summed over the masters.
  std::size_t countKeys(const std::string& pattern);

 private:
  Reply onMaster(const std::string& key, const std::vector<std::string>& argv);
  TestRedis& connection(int port);
  std::vector<int> seeds_;
  std::string password_;
  std::vector<ClusterNode> nodes_;
  std::array<int, kClusterSlots> slotMaster_{};
  std::map<int, std::unique_ptr<TestRedis>> connections_;
};

// A private cluster of six redis-servers on free ports of 127.0.0.1 (3 masters, 3 replicas,
// formed by `redis-cli --cluster create`), killed with the test process. About 1.5 s to start.
class RedisCluster {
 public:
  struct Settings {
    int nodeTimeoutMs = 5000;                // cluster-node-timeout: how soon a dead master is replaced
    std::string password;                    // requirepass and masterauth of every node
    std::vector<std::string> extraArgs;      // appended to every node's command line
  };
  RedisCluster();
  explicit RedisCluster(Settings settings);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // redis-cluster://[userinfo@]127.0.0.1:P1,...,127.0.0.1:P6
  std::string url(const std::string& userinfo = {}) const;
  std::vector<int> ports() const;
  ClusterView& view() noexcept { return *view_; }
  RedisServerProcess& process(int port);

  // Waits until every running node says cluster_state:ok, all of them agree on the master of every
  // slot, none sees a live master without slots (one being demoted) nor a killed node not yet failed
  // and replaced, and, with replicasLinked,
  // every running replica's link is up; then refreshes view(). Throws after limit.
  void waitConverged(std::chrono::milliseconds limit = std::chrono::seconds(30), bool replicasLinked = true);

  // CLUSTER FAILOVER [mode] on a replica of the master on masterPort; waits until that replica is
  // the master of those slots everywhere. Returns its port.
  int failover(int masterPort, const std::string& mode = {});
  void kill(int port);     // SIGKILL
  void restart(int port);  // the same port, the same nodes.conf
  void pause(int port);    // SIGSTOP
  void resume(int port);   // SIGCONT

 private:
  Settings settings_;
  std::string dir_;
  std::vector<std::unique_ptr<RedisServerProcess>> nodes_;
  std::unique_ptr<ClusterView> view_;
};

}  // namespace streamlock::test
