#include "redis_cluster.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "env.h"
#include "process.h"

namespace streamlock::test {

namespace {

// CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, as in the cluster specification.
std::uint16_t crc16(std::string_view data) {
  unsigned crc = 0;
  for (const char c : data) {
    crc ^= static_cast<unsigned>(static_cast<unsigned char>(c)) << 8U;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000U) != 0 ? (crc << 1U) ^ 0x1021U : crc << 1U;
    crc &= 0xFFFFU;
  }
  return static_cast<std::uint16_t>(crc);
}

std::string replyString(const redisReply* reply) {
  if (reply == nullptr || reply->str == nullptr) return {};
  return std::string(reply->str, reply->len);
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream stream(text);
  std::string line;
  while (std::getline(stream, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// CLUSTER NODES text -> nodes (migration markers "[slot->-id]" skipped).
std::vector<ClusterNode> parseClusterNodes(const std::string& text) {
  std::vector<ClusterNode> nodes;
  for (const auto& line : lines(text)) {
    std::istringstream fields(line);
    std::string id, address, flags, master, pingSent, pongReceived, epoch, link;
    fields >> id >> address >> flags >> master >> pingSent >> pongReceived >> epoch >> link;
    ClusterNode node;
    node.id = id;
    const auto colon = address.rfind(':', address.find('@'));
    node.port = std::stoi(address.substr(colon + 1, address.find('@') - colon - 1));
    std::istringstream flagList(flags);
    std::string flag;
    while (std::getline(flagList, flag, ',')) {
      if (flag == "master") node.master = true;
      if (flag == "fail") node.failed = true;  // agreed upon; "fail?" is one node's suspicion
    }
    if (master != "-") node.masterId = master;
    std::string range;
    while (fields >> range) {
      if (range.empty() || range.front() == '[') continue;
      const auto dash = range.find('-');
      const auto first = static_cast<unsigned>(std::stoul(range.substr(0, dash)));
      const auto last = dash == std::string::npos ? first : static_cast<unsigned>(std::stoul(range.substr(dash + 1)));
      node.slots.emplace_back(first, last);
    }
    nodes.push_back(std::move(node));
  }
  return nodes;
}

// slot -> master port as the given node list says, 0 where none.
std::array<int, kClusterSlots> slotMap(const std::vector<ClusterNode>& nodes) {
  std::array<int, kClusterSlots> map{};
  for (const auto& node : nodes) {
    if (!node.master || node.failed) continue;
    for (const auto& [first, last] : node.slots) {
      for (unsigned slot = first; slot <= last && slot < kClusterSlots; ++slot) map[slot] = node.port;
    }
  }
  return map;
}

}  // namespace

unsigned keySlot(std::string_view key) {
  const auto open = key.find('{');
  if (open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return crc16(key) % kClusterSlots;
}

std::string chatIdInSlot(const std::string& prefix, unsigned slot, const std::string& stem) {
  for (unsigned long n = 0;; ++n) {
    std::string id = stem + "-" + std::to_string(n);
    if (keySlot(prefix + id) == slot) return id;
  }
}

// ---- ClusterView ----

ClusterView::ClusterView(std::vector<int> seedPorts, std::string password)
    : seeds_(std::move(seedPorts)), password_(std::move(password)) {
  refresh();
}

ClusterView::~ClusterView() = default;

TestRedis& ClusterView::connection(int port) {
  auto& slot = connections_[port];
  if (!slot) {
    auto fresh = std::make_unique<TestRedis>("127.0.0.1", port);
    if (!password_.empty()) fresh->ok({"AUTH", password_});
    slot = std::move(fresh);
  }
  return *slot;
}

void ClusterView::forget(int port) { connections_.erase(port); }

Reply ClusterView::command(int port, const std::vector<std::string>& argv) {
  try {
    return connection(port).command(argv);
  } catch (const std::exception&) {
    forget(port);  // a connection broken by a restart or a kill: one more try on a fresh one
    return connection(port).command(argv);
  }
}

void ClusterView::refresh() {
  std::string why;
  for (const int port : seeds_) {
    try {
      const Reply reply = command(port, {"CLUSTER", "NODES"});
      if (reply->type != REDIS_REPLY_STRING) {
        why = "127.0.0.1:" + std::to_string(port) + " answered " + replyString(reply.get());
        continue;
      }
      nodes_ = parseClusterNodes(replyString(reply.get()));
      slotMaster_ = slotMap(nodes_);
      for (const auto& node : nodes_) {
        if (std::find(seeds_.begin(), seeds_.end(), node.port) == seeds_.end()) seeds_.push_back(node.port);
      }
      return;
    } catch (const std::exception& error) {
      forget(port);
      why = error.what();
    }
  }
  throw std::runtime_error("ClusterView: no seed answered CLUSTER NODES: " + why);
}

std::vector<int> ClusterView::masterPorts() const {
  std::vector<std::pair<unsigned, int>> masters;
  for (const auto& node : nodes_) {
    if (node.master && !node.failed && !node.slots.empty()) masters.emplace_back(node.slots.front().first, node.port);
  }
  std::sort(masters.begin(), masters.end());
  std::vector<int> ports;
  for (const auto& [slot, port] : masters) ports.push_back(port);
  return ports;
}

int ClusterView::masterOf(unsigned slot) const {
  const int port = slotMaster_.at(slot);
  if (port == 0) throw std::runtime_error("ClusterView: no master serves slot " + std::to_string(slot));
  return port;
}

int ClusterView::replicaOf(int masterPort) const {
  const std::string id = idOf(masterPort);
  for (const auto& node : nodes_) {
    if (!node.master && !node.failed && node.masterId == id) return node.port;
  }
  std::string known;
  for (const auto& node : nodes_) {
    known += "\n  " + std::to_string(node.port) + (node.master ? " master" : " replica of " + node.masterId) +
             (node.failed ? " (failed)" : "") + " " + node.id;
  }
  throw std::runtime_error("ClusterView: the master on port " + std::to_string(masterPort) + " has no replica:" +
                           known);
}

std::string ClusterView::idOf(int port) const {
  for (const auto& node : nodes_) {
    if (node.port == port) return node.id;
  }
  throw std::runtime_error("ClusterView: no node on port " + std::to_string(port));
}

int ClusterView::portOf(const std::string& id) const {
  for (const auto& node : nodes_) {
    if (node.id == id) return node.port;
  }
  throw std::runtime_error("ClusterView: no node " + id);
}

std::vector<std::pair<unsigned, unsigned>> ClusterView::slotsOf(int port) const {
  for (const auto& node : nodes_) {
    if (node.port == port) return node.slots;
  }
  return {};
}

long long ClusterView::infoField(int port, const std::string& section, const std::string& field) {
  const Reply reply = command(port, {"INFO", section});
  for (const auto& line : lines(replyString(reply.get()))) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  throw std::runtime_error("ClusterView: INFO " + section + " of port " + std::to_string(port) + " has no " + field);
}

std::map<std::string, long long> ClusterView::commandCalls(int port) {
  const Reply reply = command(port, {"INFO", "commandstats"});
  std::map<std::string, long long> calls;
  const std::string prefix = "cmdstat_";
  for (const auto& line : lines(replyString(reply.get()))) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto colon = line.find(':');
    const auto at = line.find("calls=", colon);
    if (colon == std::string::npos || at == std::string::npos) continue;
    calls[line.substr(prefix.size(), colon - prefix.size())] = std::stoll(line.substr(at + 6));
  }
  return calls;
}

Reply ClusterView::onMaster(const std::string& key, const std::vector<std::string>& argv) {
  for (int attempt = 0;; ++attempt) {
    Reply reply = command(masterOfKey(key), argv);
    const std::string text = reply->type == REDIS_REPLY_ERROR ? replyString(reply.get()) : std::string();
    if (text.rfind("MOVED", 0) == 0 || text.rfind("CLUSTERDOWN", 0) == 0 || text.rfind("TRYAGAIN", 0) == 0) {
      if (attempt < 50) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        refresh();
        continue;
      }
    }
    if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error("ClusterView: " + argv.front() + " " + key + ": " + text);
    return reply;
  }
}

void ClusterView::set(const std::string& key, const std::string& value, long long ttlMs) {
  std::vector<std::string> argv{"SET", key, value};
  if (ttlMs > 0) argv.insert(argv.end(), {"PX", std::to_string(ttlMs)});
  onMaster(key, argv);
}

void ClusterView::setMany(const std::vector<std::pair<std::string, std::string>>& pairs, long long ttlMs) {
  std::map<int, std::vector<std::vector<std::string>>> perMaster;
  for (const auto& [key, value] : pairs) {
    std::vector<std::string> argv{"SET", key, value};
    if (ttlMs > 0) argv.insert(argv.end(), {"PX", std::to_string(ttlMs)});
    perMaster[masterOfKey(key)].push_back(std::move(argv));
  }
  for (auto& [port, commands] : perMaster) {
    TestRedis& redis = connection(port);
    redis.pipeline(commands, [&](const redisReply* reply, const std::vector<std::string>& argv) {
      if (reply->type == REDIS_REPLY_ERROR) {
        throw std::runtime_error("ClusterView: SET " + argv[1] + " on port " + std::to_string(port) + ": " +
                                 replyString(reply));
      }
    });
  }
}

std::optional<std::string> ClusterView::get(const std::string& key) {
  const Reply reply = onMaster(key, {"GET", key});
  if (reply->type == REDIS_REPLY_NIL) return std::nullopt;
  return replyString(reply.get());
}

long long ClusterView::pttl(const std::string& key) { return onMaster(key, {"PTTL", key})->integer; }

long long ClusterView::del(const std::string& key) { return onMaster(key, {"DEL", key})->integer; }

std::optional<std::string> ClusterView::getOnReplica(int replicaPort, const std::string& key) {
  command(replicaPort, {"READONLY"});
  const Reply reply = command(replicaPort, {"GET", key});
  if (reply->type == REDIS_REPLY_ERROR) {
    throw std::runtime_error("ClusterView: GET " + key + " on replica " + std::to_string(replicaPort) + ": " +
                             replyString(reply.get()));
  }
  if (reply->type == REDIS_REPLY_NIL) return std::nullopt;
  return replyString(reply.get());
}

std::size_t ClusterView::countKeys(const std::string& pattern) {
  std::size_t count = 0;
  for (const int port : masterPorts()) count += command(port, {"KEYS", pattern})->elements;
  return count;
}

// ---- RedisCluster ----

RedisCluster::RedisCluster() : RedisCluster(Settings{}) {}

RedisCluster::RedisCluster(Settings settings) : settings_(std::move(settings)), dir_(makeScratchDir("cluster")) {
  for (int i = 0; i < 6; ++i) {
    const std::string dir = dir_ + "/node-" + std::to_string(i);
    std::filesystem::create_directories(dir);
    std::vector<std::string> args{"--dir",        dir,   "--logfile",     dir + "/redis.log",
                                  "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", std::to_string(settings_.nodeTimeoutMs),
                                  // A replica's first sync starts at once (7.0 waits 5 s by default).
                                  "--repl-diskless-sync-delay", "0"};
    if (!settings_.password.empty()) {
      args.insert(args.end(), {"--requirepass", settings_.password, "--masterauth", settings_.password});
    }
    args.insert(args.end(), settings_.extraArgs.begin(), settings_.extraArgs.end());
    nodes_.push_back(RedisServerProcess::clusterNode(args));
  }
  std::vector<std::string> create{requireEnv("STREAMLOCK_TEST_REDIS_CLI")};
  if (!settings_.password.empty()) create.insert(create.end(), {"-a", settings_.password, "--no-auth-warning"});
  create.insert(create.end(), {"--cluster", "create"});
  for (const auto& node : nodes_) create.push_back("127.0.0.1:" + std::to_string(node->port()));
  create.insert(create.end(), {"--cluster-replicas", "1", "--cluster-yes"});
  runCommand(create, std::chrono::seconds(60), {false, dir_ + "/create.log"});
  view_ = std::make_unique<ClusterView>(ports(), settings_.password);
  waitConverged();
}

RedisCluster::~RedisCluster() {
  view_.reset();
  nodes_.clear();  // kills them
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string RedisCluster::url(const std::string& userinfo) const {
  std::string url = "redis-cluster://" + (userinfo.empty() ? std::string() : userinfo + "@");
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    url += (i == 0 ? "" : ",") + std::string("127.0.0.1:") + std::to_string(nodes_[i]->port());
  }
  return url;
}

std::vector<int> RedisCluster::ports() const {
  std::vector<int> ports;
  for (const auto& node : nodes_) ports.push_back(node->port());
  return ports;
}

RedisServerProcess& RedisCluster::process(int port) {
  for (auto& node : nodes_) {
    if (node->port() == port) return *node;
  }
  throw std::runtime_error("RedisCluster: no node on port " + std::to_string(port));
}

void RedisCluster::waitConverged(std::chrono::milliseconds limit, bool replicasLinked) {
  std::string why;
  const bool done = waitUntil(
      [&] {
        try {
          std::optional<std::array<int, kClusterSlots>> agreed;
          for (const auto& node : nodes_) {
            if (!node->running()) continue;
            const int port = node->port();
            const std::string info = replyString(view_->command(port, {"CLUSTER", "INFO"}).get());
            if (info.find("cluster_state:ok") == std::string::npos) {
              why = "node " + std::to_string(port) + " is not ok";
              return false;
            }
            const auto nodes = parseClusterNodes(replyString(view_->command(port, {"CLUSTER", "NODES"}).get()));
            for (const auto& other : nodes) {
              if (other.master && !other.failed && other.slots.empty()) {  // e.g. a master being demoted
                why = "node " + std::to_string(port) + " sees a master without slots: " + std::to_string(other.port);
                return false;
              }
              const bool down = std::any_of(nodes_.begin(), nodes_.end(), [&](const auto& process) {
                return process->port() == other.port && !process->running();
              });
              if (down && (!other.failed || !other.slots.empty())) {  // a killed node not yet replaced
                why = "node " + std::to_string(port) + " does not yet see " + std::to_string(other.port) + " failed";
                return false;
              }
            }
            const auto map = slotMap(nodes);
            if (std::find(map.begin(), map.end(), 0) != map.end()) {
              why = "node " + std::to_string(port) + " sees uncovered slots";
              return false;
            }
            if (agreed && *agreed != map) {
              why = "the nodes disagree on the masters";
              return false;
            }
            agreed = map;
            if (replicasLinked) {
              const std::string replication = replyString(view_->command(port, {"INFO", "replication"}).get());
              if (replication.find("role:slave") != std::string::npos &&
                  replication.find("master_link_status:up") == std::string::npos) {
                why = "replica " + std::to_string(port) + " is not linked";
                return false;
              }
            }
          }
          return true;
        } catch (const std::exception& error) {
          why = error.what();
          return false;
        }
      },
      limit, std::chrono::milliseconds(20));
  if (!done) throw std::runtime_error("RedisCluster: not converged after " + std::to_string(limit.count()) + " ms: " + why);
  view_->refresh();
}

int RedisCluster::failover(int masterPort, const std::string& mode) {
  const int replica = view_->replicaOf(masterPort);
  std::vector<std::string> argv{"CLUSTER", "FAILOVER"};
  if (!mode.empty()) argv.push_back(mode);
  const Reply reply = view_->command(replica, argv);
  if (reply->type == REDIS_REPLY_ERROR) throw std::runtime_error("CLUSTER FAILOVER: " + replyString(reply.get()));
  const bool promoted = waitUntil(
      [&] {
        try {
          return replyString(view_->command(replica, {"INFO", "replication"}).get()).find("role:master") !=
                 std::string::npos;
        } catch (const std::exception&) {
          return false;
        }
      },
      std::chrono::seconds(30), std::chrono::milliseconds(10));
  if (!promoted) throw std::runtime_error("RedisCluster: replica " + std::to_string(replica) + " was not promoted");
  waitConverged(std::chrono::seconds(30), false);
  return replica;
}

void RedisCluster::kill(int port) {
  process(port).kill();
  view_->forget(port);
}

void RedisCluster::restart(int port) { process(port).start(); }

void RedisCluster::pause(int port) { process(port).pause(); }

void RedisCluster::resume(int port) { process(port).resume(); }

}  // namespace streamlock::test
