#pragma once

// What tests/run.sh provides: the servers' addresses, unique names for isolation, and a way to
// await a condition instead of sleeping.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "streamlock/options.h"

namespace streamlock::test {

using namespace std::chrono_literals;

// The value of an environment variable the harness must set; throws a clear error when missing.
std::string requireEnv(const char* name);

// STREAMLOCK_TEST_REDIS_URL: the shared redis-server.
std::string redisUrl();
// STREAMLOCK_TEST_REDIS_SERVER: the redis-server binary for private servers.
std::string redisServerBinary();
// STREAMLOCK_TEST_DATABASE_URL: a superuser on a throwaway cluster with pg_stat_statements.
std::string databaseUrl();

// The shared topologies of tests/run.sh (read-only for tests: destructive tests start their own).
// STREAMLOCK_TEST_CLUSTER_URL: redis-cluster://127.0.0.1:P1,... (3 masters, 3 replicas).
std::string clusterUrl();
// STREAMLOCK_TEST_CLUSTER_NODES: the same nodes as host:port.
std::vector<std::pair<std::string, int>> clusterNodes();
// STREAMLOCK_TEST_SENTINEL_URL: redis-sentinel://127.0.0.1:S1,...?master=NAME.
std::string sentinelUrl();
// STREAMLOCK_TEST_SENTINEL_NAME, _PORTS, _MASTER_PORT and _REPLICA_PORTS.
std::string sentinelMasterName();
std::vector<int> sentinelPorts();
int sentinelMasterPort();
std::vector<int> sentinelReplicaPorts();
// "host1:port1,host2:port2" -> pairs; "p1,p2" -> ports.
std::vector<std::pair<std::string, int>> parseHostPorts(const std::string& list);
std::vector<int> parsePorts(const std::string& list);

// 16 random hex digits, different in every call and every process.
std::string uniqueId();
// A fresh lock key prefix "test:<unique>:", so parallel test cases never share keys.
std::string uniquePrefix();

// A TCP port on 127.0.0.1 that nothing listens on (bound once, then closed).
int closedPort();

// Polls cond until it holds or the timeout passes; returns its last value.
bool waitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 10s,
               std::chrono::milliseconds poll = 5ms);

// Milliseconds elapsed since start.
std::chrono::milliseconds elapsedSince(std::chrono::steady_clock::time_point start);

// Established TCP connections of this host whose remote end is 127.0.0.1:port (/proc/net/tcp):
// a client's connections to a server, visible even while the server is stopped.
std::size_t connectionsTo(int port);

// The threads of this process, from /proc/self/task.
std::size_t threadCount();

// The calling thread's kernel id.
pid_t currentTid();

// Waits up to limit until thread tid is gone from /proc/self/task: a joined thread is still listed
// there for a moment after join() returns (join waits for its id to be cleared, not for the kernel
// to reap it). Whether it went.
bool waitReaped(pid_t tid, std::chrono::milliseconds limit = std::chrono::seconds{2});

// threadCount() once the sanitizers' helper thread exists (they start it with the first thread),
// so that a count taken before a Client is comparable with one taken after it.
std::size_t threadsWithoutClient();

}  // namespace streamlock::test
