#include "redis_sentinel.h"

#include <hiredis/hiredis.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "env.h"
#include "process.h"

namespace streamlock::test {

namespace {

std::string text(const redisReply* reply) {
  if (reply == nullptr || reply->str == nullptr) return {};
  return std::string(reply->str, reply->len);
}

// A flat RESP2 array of field, value, field, value... as a map.
std::map<std::string, std::string> fields(const redisReply* reply) {
  std::map<std::string, std::string> out;
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY) return out;
  for (std::size_t i = 0; i + 1 < reply->elements; i += 2) out[text(reply->element[i])] = text(reply->element[i + 1]);
  return out;
}

}  // namespace

SentinelSetup::SentinelSetup() : SentinelSetup(Settings{}) {}

SentinelSetup::SentinelSetup(Settings settings) : settings_(std::move(settings)), dir_(makeScratchDir("sentinel")) {
  auto serverArgs = [this](const std::string& what) {
    const std::string dir = dir_ + "/" + what;
    std::filesystem::create_directories(dir);
    // A replica's first sync starts at once (7.0 waits 5 s for more replicas by default).
    return std::vector<std::string>{"--dir", dir, "--logfile", dir + "/redis.log", "--repl-diskless-sync-delay", "0"};
  };
  servers_.push_back(std::make_unique<RedisServerProcess>(serverArgs("master")));
  const int master = servers_.front()->port();
  for (int i = 1; i <= settings_.replicas; ++i) {
    auto args = serverArgs("replica-" + std::to_string(i));
    args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(master)});
    servers_.push_back(std::make_unique<RedisServerProcess>(args));
  }
  for (int i = 1; i <= 3; ++i) {
    const std::string dir = dir_ + "/sentinel-" + std::to_string(i);
    std::filesystem::create_directories(dir);
    const std::string config = dir + "/sentinel.conf";  // sentinel rewrites it
    std::ofstream(config) << "sentinel monitor " << settings_.name << " 127.0.0.1 " << master << " 2\n"
                          << "sentinel down-after-milliseconds " << settings_.name << " " << settings_.downAfterMs
                          << "\n"
                          << "sentinel failover-timeout " << settings_.name << " " << settings_.failoverTimeoutMs
                          << "\n"
                          << "sentinel parallel-syncs " << settings_.name << " 1\n";
    sentinels_.push_back(std::make_unique<RedisServerProcess>(
        config, std::vector<std::string>{"--dir", dir, "--logfile", dir + "/sentinel.log"}));
  }
  waitSettled(std::chrono::seconds(30));
}

SentinelSetup::~SentinelSetup() {
  connections_.clear();
  sentinels_.clear();
  servers_.clear();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string SentinelSetup::url(const std::string& userinfo, const std::string& db) const {
  std::string url = "redis-sentinel://" + (userinfo.empty() ? std::string() : userinfo + "@");
  for (std::size_t i = 0; i < sentinels_.size(); ++i) {
    url += (i == 0 ? "" : ",") + std::string("127.0.0.1:") + std::to_string(sentinels_[i]->port());
  }
  if (!db.empty()) url += "/" + db;
  return url + "?master=" + settings_.name;
}

std::vector<int> SentinelSetup::sentinelPorts() const {
  std::vector<int> ports;
  for (const auto& sentinel : sentinels_) ports.push_back(sentinel->port());
  return ports;
}

std::vector<int> SentinelSetup::serverPorts() const {
  std::vector<int> ports;
  for (const auto& server : servers_) ports.push_back(server->port());
  return ports;
}

RedisServerProcess& SentinelSetup::server(int port) {
  for (auto& server : servers_) {
    if (server->port() == port) return *server;
  }
  throw std::runtime_error("SentinelSetup: no server on port " + std::to_string(port));
}

Reply SentinelSetup::command(int port, const std::vector<std::string>& argv) {
  auto attempt = [&]() -> Reply {
    auto& slot = connections_[port];
    if (!slot) slot = std::make_unique<TestRedis>("127.0.0.1", port);
    return slot->command(argv);
  };
  try {
    return attempt();
  } catch (const std::exception&) {
    forget(port);
    return attempt();
  }
}

void SentinelSetup::forget(int port) { connections_.erase(port); }

std::string SentinelSetup::role(int port) {
  try {
    const Reply reply = command(port, {"ROLE"});
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) return text(reply->element[0]);
  } catch (const std::exception&) {
    forget(port);
  }
  return "down";
}

int SentinelSetup::masterPortBySentinels() {
  for (const auto& sentinel : sentinels_) {
    if (!sentinel->running()) continue;
    try {
      const Reply reply = command(sentinel->port(), {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings_.name});
      if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) return std::stoi(text(reply->element[1]));
    } catch (const std::exception&) {
      forget(sentinel->port());
    }
  }
  throw std::runtime_error("SentinelSetup: no sentinel names the master");
}

int SentinelSetup::waitForNewMaster(int oldMasterPort, std::chrono::milliseconds limit) {
  int found = 0;
  const bool done = waitUntil(
      [&] {
        int named = 0;
        for (const auto& sentinel : sentinels_) {
          if (!sentinel->running()) continue;
          try {
            const Reply reply = command(sentinel->port(), {"SENTINEL", "GET-MASTER-ADDR-BY-NAME", settings_.name});
            if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) return false;
            const int port = std::stoi(text(reply->element[1]));
            if (port == oldMasterPort || (named != 0 && port != named)) return false;
            named = port;
          } catch (const std::exception&) {
            forget(sentinel->port());
            return false;
          }
        }
        if (named == 0 || role(named) != "master") return false;
        found = named;
        return true;
      },
      limit, std::chrono::milliseconds(20));
  if (!done) throw std::runtime_error("SentinelSetup: no new master within " + std::to_string(limit.count()) + " ms");
  return found;
}

void SentinelSetup::waitSettled(std::chrono::milliseconds limit, std::optional<int> replicas) {
  const int expected = replicas.value_or(settings_.replicas);
  std::string why;
  const bool done = waitUntil(
      [&] {
        try {
          int master = 0;
          for (const auto& sentinel : sentinels_) {
            if (!sentinel->running()) continue;
            const Reply reply = command(sentinel->port(), {"SENTINEL", "MASTER", settings_.name});
            auto state = fields(reply.get());
            if (state["flags"] != "master" || state["num-slaves"] != std::to_string(expected) ||
                state["num-other-sentinels"] != "2") {
              why = "sentinel " + std::to_string(sentinel->port()) + ": flags " + state["flags"] + ", " +
                    state["num-slaves"] + " replicas, " + state["num-other-sentinels"] + " other sentinels";
              return false;
            }
            master = std::stoi(state["port"]);
          }
          for (const auto& server : servers_) {
            if (!server->running() || server->port() == master) continue;
            const std::string replication = text(command(server->port(), {"INFO", "replication"}).get());
            if (replication.find("master_port:" + std::to_string(master)) == std::string::npos ||
                replication.find("master_link_status:up") == std::string::npos) {
              why = "replica " + std::to_string(server->port()) + " is not linked to " + std::to_string(master);
              return false;
            }
          }
          return true;
        } catch (const std::exception& error) {
          why = error.what();
          return false;
        }
      },
      limit, std::chrono::milliseconds(20));
  if (!done) throw std::runtime_error("SentinelSetup: not settled after " + std::to_string(limit.count()) + " ms: " + why);
}

}  // namespace streamlock::test
