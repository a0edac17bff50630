#include "env.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace streamlock::test {

std::string requireEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string(name) +
                             " is not set: run the tests through tests/run.sh, which starts the servers"
                             " and exports it");
  }
  return value;
}

std::string redisUrl() { return requireEnv("STREAMLOCK_TEST_REDIS_URL"); }
std::string redisServerBinary() { return requireEnv("STREAMLOCK_TEST_REDIS_SERVER"); }
std::string databaseUrl() { return requireEnv("STREAMLOCK_TEST_DATABASE_URL"); }

std::string clusterUrl() { return requireEnv("STREAMLOCK_TEST_CLUSTER_URL"); }
std::vector<std::pair<std::string, int>> clusterNodes() { return parseHostPorts(requireEnv("STREAMLOCK_TEST_CLUSTER_NODES")); }
std::string sentinelUrl() { return requireEnv("STREAMLOCK_TEST_SENTINEL_URL"); }
std::string sentinelMasterName() { return requireEnv("STREAMLOCK_TEST_SENTINEL_NAME"); }
std::vector<int> sentinelPorts() { return parsePorts(requireEnv("STREAMLOCK_TEST_SENTINEL_PORTS")); }
int sentinelMasterPort() { return std::stoi(requireEnv("STREAMLOCK_TEST_SENTINEL_MASTER_PORT")); }
std::vector<int> sentinelReplicaPorts() { return parsePorts(requireEnv("STREAMLOCK_TEST_SENTINEL_REPLICA_PORTS")); }

std::vector<std::pair<std::string, int>> parseHostPorts(const std::string& list) {
  std::vector<std::pair<std::string, int>> out;
  std::istringstream items(list);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto colon = item.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error("not host:port: " + item);
    out.emplace_back(item.substr(0, colon), std::stoi(item.substr(colon + 1)));
  }
  return out;
}

std::vector<int> parsePorts(const std::string& list) {
  std::vector<int> out;
  std::istringstream items(list);
  std::string item;
  while (std::getline(items, item, ',')) out.push_back(std::stoi(item));
  return out;
}

std::string uniqueId() {
  static std::atomic<std::uint64_t> counter{0};
  static const std::uint64_t seed = [] {
    std::random_device device;
    return (std::uint64_t{device()} << 32) ^ std::uint64_t{device()};
  }();
  std::mt19937_64 mix(seed + counter.fetch_add(1) + static_cast<std::uint64_t>(::getpid()));
  static const char digits[] = "0123456789abcdef";
  std::uint64_t value = mix();
  std::string id(16, '0');
  for (auto& c : id) {
    c = digits[value & 0xfU];
    value >>= 4U;
  }
  return id;
}

std::string uniquePrefix() { return "test:" + uniqueId() + ":"; }

int closedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  // sockaddr_in -> sockaddr is how the socket API is spelled.
  auto* generic = reinterpret_cast<sockaddr*>(&address);
  if (::bind(fd, generic, length) != 0 || ::getsockname(fd, generic, &length) != 0) {
    ::close(fd);
    throw std::runtime_error("could not bind an ephemeral port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

bool waitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
               std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return cond();
    std::this_thread::sleep_for(poll);
  }
}

std::chrono::milliseconds elapsedSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

std::size_t connectionsTo(int port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  std::size_t count = 0;
  while (std::getline(table, line)) {
    // "  0: 0100007F:9C40 0100007F:18EB 01 ..." : sl, local, remote, state
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    const auto colon = remote.find(':');
    if (colon == std::string::npos || state != "01") continue;
    if (std::stoi(remote.substr(colon + 1), nullptr, 16) == port) ++count;
  }
  return count;
}

std::size_t threadCount() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++count;
  return count;
}

pid_t currentTid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

bool waitReaped(pid_t tid, std::chrono::milliseconds limit) {
  const std::string entry = "/proc/self/task/" + std::to_string(tid);
  return waitUntil([&] { return !std::filesystem::exists(entry); }, limit, std::chrono::milliseconds{1});
}

std::size_t threadsWithoutClient() {
  pid_t tid = 0;
  std::thread([&tid] { tid = currentTid(); }).join();
  (void)waitReaped(tid);
  return threadCount();
}

}  // namespace streamlock::test
