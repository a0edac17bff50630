// The read path on Redis Cluster: getActiveChatStreamIds of a batch whose keys fall in slots of
// every master, against the raw floor, a hand-written per-node pipeline of GETs on blocking hiredis
// contexts (one per master), for the same keys in the same run.
//
// For each batch size (50 and 1,000 chats; every third chat holds a live lock):
//   cluster/raw_per_node_get/N   floor: the slot map read once beforehand (CLUSTER SLOTS); per call,
//                                the keys built and grouped by master, one pipeline of GETs appended
//                                to each master's context, every pipeline written before any reply
//                                is read, then the replies read node by node, owners counted.
//   cluster/lib_get_active/N     Client::getActiveChatStreamIds(chatIds) on a redis-cluster:// URL.
// Every iteration checks the answer (verified, N/3 owners); a wrong one fails the benchmark. Times
// are wall-clock per call, the median of the repetitions.
//
// Needs STREAMLOCK_BENCH_CLUSTER_URL (redis-cluster://h1:p1,h2:p2,...), which bench/run.sh sets
// after it has started a local cluster.

#include <array>
#include <functional>
#include <memory>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_support.h"
#include "streamlock/streamlock.h"

namespace {

constexpr std::size_t kSizes[] = {50, 1000};
constexpr std::size_t kMaxChats = 1000;
constexpr std::size_t kSlots = 16384;

bool hasLock(std::size_t i) { return i % 3 == 0; }
std::size_t expectedOwners(std::size_t n) { return (n + 2) / 3; }

// The Redis Cluster key hash: CRC16-XMODEM of the key (this benchmark's keys have no hash tag).
std::uint16_t slotOf(const std::string& key) {
  unsigned crc = 0;
  for (char c : key) {
    crc ^= static_cast<unsigned>(static_cast<unsigned char>(c)) << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
  }
  return static_cast<std::uint16_t>((crc & 0xffff) % kSlots);
}

// The masters of a cluster, one blocking context each, and the slot map from CLUSTER SLOTS.
class RawCluster {
 public:
  explicit RawCluster(const std::string& url) {
    // redis-cluster://h1:p1,h2:p2: any seed answers CLUSTER SLOTS.
    const std::string hosts = url.substr(url.find("://") + 3);
    const std::string seed = hosts.substr(0, hosts.find(','));
    bench::RawRedis first("redis://" + seed);
    bench::Reply slots = bench::RawRedis::check(first.command({"CLUSTER", "SLOTS"}));
    slotOwner_.assign(kSlots, -1);
    for (std::size_t e = 0; e < slots->elements; ++e) {
      const redisReply* entry = slots->element[e];
      const redisReply* master = entry->element[2];
      std::string host(master->element[0]->str, master->element[0]->len);
      if (host.empty()) host = seed.substr(0, seed.rfind(':'));
      const std::string address = host + ":" + std::to_string(master->element[1]->integer);
      if (!index_.count(address)) {
        index_[address] = static_cast<int>(masters_.size());
        masters_.push_back(std::make_unique<bench::RawRedis>("redis://" + address));
      }
      for (long long s = entry->element[0]->integer; s <= entry->element[1]->integer; ++s) {
        slotOwner_[static_cast<std::size_t>(s)] = index_[address];
      }
    }
  }

  std::size_t masters() const { return masters_.size(); }
  bench::RawRedis& master(std::size_t i) { return *masters_[i]; }
  int ownerOf(const std::string& key) const { return slotOwner_[slotOf(key)]; }

 private:
  std::vector<std::unique_ptr<bench::RawRedis>> masters_;
  std::map<std::string, int> index_;
  std::vector<int> slotOwner_;
};

// The floor: per call, group by master, write every pipeline, then read every reply.
class RawPerNodeGet {
 public:
  explicit RawPerNodeGet(RawCluster& cluster) : cluster_(cluster), byNode_(cluster.masters()) {}

  std::size_t run(const std::vector<std::string>& ids) {
    for (auto& keys : byNode_) keys.clear();
    keys_.resize(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      keys_[i].assign(bench::kKeyPrefix).append(ids[i]);
      byNode_[static_cast<std::size_t>(cluster_.ownerOf(keys_[i]))].push_back(i);
    }
    for (std::size_t node = 0; node < byNode_.size(); ++node) {
      redisContext* context = cluster_.master(node).get();
      for (std::size_t i : byNode_[node]) {
        const char* argv[] = {"GET", keys_[i].data()};
        const std::size_t lengths[] = {3, keys_[i].size()};
        redisAppendCommandArgv(context, 2, argv, lengths);
      }
      // Written now, so that every master works while the replies of the first are read.
      int done = 0;
      while (!done) {
        if (redisBufferWrite(context, &done) != REDIS_OK) throw std::runtime_error("raw write failed");
      }
    }
    std::size_t owners = 0;
    for (std::size_t node = 0; node < byNode_.size(); ++node) {
      redisContext* context = cluster_.master(node).get();
      for (std::size_t k = 0; k < byNode_[node].size(); ++k) {
        void* raw = nullptr;
        if (redisGetReply(context, &raw) != REDIS_OK) throw std::runtime_error("raw GET failed");
        bench::Reply reply(static_cast<redisReply*>(raw));
        if (reply->type == REDIS_REPLY_STRING && reply->len > 0) ++owners;
      }
    }
    return owners;
  }

 private:
  RawCluster& cluster_;
  std::vector<std::vector<std::size_t>> byNode_;
  std::vector<std::string> keys_;
};

void seedLocks(RawCluster& cluster, bool set) {
  for (std::size_t i = 0; i < kMaxChats; ++i) {
    const std::string key = bench::kKeyPrefix + bench::chatId(i);
    bench::RawRedis& master = cluster.master(static_cast<std::size_t>(cluster.ownerOf(key)));
    if (set && hasLock(i)) {
      bench::RawRedis::check(master.command({"SET", key, bench::streamId(i), "EX", "3600"}));
    } else {
      master.command({"DEL", key});
    }
  }
}

void rawPerNodeGet(benchmark::State& state, RawCluster& cluster, const std::vector<std::string>& ids) {
  RawPerNodeGet floor(cluster);
  for (auto _ : state) {
    const std::size_t owners = floor.run(ids);
    if (owners != expectedOwners(ids.size())) state.SkipWithError("the raw per-node GETs found the wrong owners");
    benchmark::DoNotOptimize(owners);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(ids.size()));
}

void libGetActive(benchmark::State& state, streamlock::Client& client, const std::vector<std::string>& ids) {
  for (auto _ : state) {
    streamlock::ActiveStreams active = client.getActiveChatStreamIds(ids);
    if (active.status != streamlock::LookupStatus::Verified) {
      state.SkipWithError("getActiveChatStreamIds was not verified");
    } else if (active.owners.size() != expectedOwners(ids.size())) {
      state.SkipWithError("getActiveChatStreamIds found the wrong owners");
    }
    benchmark::DoNotOptimize(active);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(ids.size()));
}

std::string name(const char* what, std::size_t n) { return std::string("cluster/") + what + "/" + std::to_string(n); }

}  // namespace

int main(int argc, char** argv) {
  const std::string url = bench::requireEnv("STREAMLOCK_BENCH_CLUSTER_URL");
  RawCluster cluster(url);
  seedLocks(cluster, true);

  streamlock::Options options;
  options.redis.url = url;
  options.redis.lookupDeadline = streamlock::Milliseconds{5000};  // a busy moment must not fail a run
  options.lock.keyPrefix = bench::kKeyPrefix;
  options.logger = bench::quietLogger;
  streamlock::Client client(options);

  std::map<std::size_t, std::vector<std::string>> batches;
  for (std::size_t n : kSizes) {
    for (std::size_t i = 0; i < n; ++i) batches[n].push_back(bench::chatId(i));
  }
  for (std::size_t n : kSizes) {
    const auto& ids = batches.at(n);
    benchmark::RegisterBenchmark(name("raw_per_node_get", n).c_str(), rawPerNodeGet, std::ref(cluster), std::cref(ids))
        ->UseRealTime();
    benchmark::RegisterBenchmark(name("lib_get_active", n).c_str(), libGetActive, std::ref(client), std::cref(ids))
        ->UseRealTime();
  }

  bench::SummaryReporter reporter;
  const bool ran = bench::runBenchmarks(argc, argv, reporter);
  const auto roundTrips = client.counters().lookupRoundTrips;
  const auto lookups = client.counters().lookupsVerified;
  client.shutdown();
  seedLocks(cluster, false);
  if (!ran) return 0;

  std::printf("\nCluster lookup (%zu masters), wall time per call in ns (median of repetitions); ratio = library / raw\n",
              cluster.masters());
  std::printf("%8s %18s %16s %8s\n", "chats", "raw_per_node_get", "lib_get_active", "ratio");
  for (std::size_t n : kSizes) {
    const double raw = reporter.ns(name("raw_per_node_get", n));
    const double lib = reporter.ns(name("lib_get_active", n));
    std::printf("%8zu %18s %16s %8s\n", n, bench::formatNs(raw).c_str(), bench::formatNs(lib).c_str(),
                bench::formatRatio(lib, raw).c_str());
  }
  if (lookups > 0) {
    std::printf("library round trips per lookup: %.2f (one pipeline per master)\n",
                static_cast<double>(roundTrips) / static_cast<double>(lookups));
  }
  return 0;
}
