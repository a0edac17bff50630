// The read path: getActiveChatStreamIds and reconcileChatStreamMarkers (repair off) against the
// raw floor, a hand-written pipelined MGET on a blocking hiredis context, for the same keys in the
// same run.
//
// For each batch size (1, 50, 1,000 and 10,000 chats; every third chat holds a live lock):
//   lookup/raw_mget/N         floor: build the N keys, one MGET per 1,000 keys sent as one
//                             pipeline (redisAppendCommandArgv), read the replies
//                             (redisGetReply), count the owners. No result container.
//   lookup/raw_mget_map/N     the same, also filling a fresh unordered_map<chatId, owner>, which
//                             is the shape the library's API returns (what that shape costs).
//   lookup/lib_get_active/N   Client::getActiveChatStreamIds(chatIds).
//   lookup/lib_reconcile/N    Client::reconcileChatStreamMarkers(candidates), every candidate with
//                             a persisted marker (so all N are looked up), repair off.
// Every iteration checks the answer (verified, N/3 owners); a wrong one fails the benchmark.
// Times are wall-clock per call (the work is mostly a round trip), the median of the repetitions.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_support.h"
#include "streamlock/streamlock.h"

namespace {

constexpr std::size_t kSizes[] = {1, 50, 1000, 10000};
constexpr std::size_t kMaxChats = 10000;
constexpr std::size_t kChunk = 1000;  // the library's default redis.mgetChunkSize

bool hasLock(std::size_t i) { return i % 3 == 0; }

std::size_t expectedOwners(std::size_t n) { return (n + 2) / 3; }

// The input of one batch size, built before the clock starts: the chat ids (for the lookups) and
// the same chats as reconciliation candidates, each with a persisted marker.
struct Batch {
  explicit Batch(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      ids.push_back(bench::chatId(i));
      candidates.push_back({bench::chatId(i), bench::streamId(i)});
    }
  }
  std::vector<std::string> ids;
  std::vector<streamlock::MarkerCandidate> candidates;
};

// Every third chat gets a live lock; the others have none (stale markers, from the reader's side).
void seedLocks(bench::RawRedis& redis) {
  for (std::size_t i = 0; i < kMaxChats; ++i) {
    std::string key = bench::kKeyPrefix + bench::chatId(i);
    if (hasLock(i)) {
      redis.append({"SET", key, bench::streamId(i), "EX", "3600"});
    } else {
      redis.append({"DEL", key});
    }
  }
  for (std::size_t i = 0; i < kMaxChats; ++i) bench::RawRedis::check(redis.reply());
}

void removeLocks(bench::RawRedis& redis) {
  for (std::size_t i = 0; i < kMaxChats; ++i) redis.append({"DEL", bench::kKeyPrefix + bench::chatId(i)});
  for (std::size_t i = 0; i < kMaxChats; ++i) redis.reply();
}

// The raw floor. Buffers are reused across calls, as a hand-tuned caller would; onOwner(index,
// value) sees each owner while its reply is alive.
class RawMget {
 public:
  explicit RawMget(redisContext* context) : context_(context) {}

  template <typename OnOwner>
  void run(const std::vector<std::string>& ids, OnOwner onOwner) {
    keys_.resize(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) keys_[i].assign(bench::kKeyPrefix).append(ids[i]);

    std::size_t chunks = 0;
    for (std::size_t begin = 0; begin < ids.size(); begin += kChunk, ++chunks) {
      std::size_t end = std::min(ids.size(), begin + kChunk);
      argv_.assign(1, "MGET");
      lengths_.assign(1, 4);
      for (std::size_t i = begin; i < end; ++i) {
        argv_.push_back(keys_[i].data());
        lengths_.push_back(keys_[i].size());
      }
      redisAppendCommandArgv(context_, static_cast<int>(argv_.size()), argv_.data(), lengths_.data());
    }
    for (std::size_t c = 0; c < chunks; ++c) {
      void* raw = nullptr;
      if (redisGetReply(context_, &raw) != REDIS_OK) throw std::runtime_error("raw MGET failed");
      bench::Reply reply(static_cast<redisReply*>(raw));
      for (std::size_t i = 0; i < reply->elements; ++i) {
        const redisReply* value = reply->element[i];
        if (value->type == REDIS_REPLY_STRING && value->len > 0) onOwner(c * kChunk + i, value);
      }
    }
  }

 private:
  redisContext* context_;
  std::vector<std::string> keys_;
  std::vector<const char*> argv_;
  std::vector<std::size_t> lengths_;
};

void rawMget(benchmark::State& state, bench::RawRedis& redis, const Batch& batch) {
  const std::vector<std::string>& ids = batch.ids;
  const std::size_t n = ids.size();
  RawMget mget(redis.get());
  for (auto _ : state) {
    std::size_t owners = 0;
    mget.run(ids, [&](std::size_t, const redisReply*) { ++owners; });
    if (owners != expectedOwners(n)) state.SkipWithError("raw MGET found the wrong owners");
    benchmark::DoNotOptimize(owners);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void rawMgetMap(benchmark::State& state, bench::RawRedis& redis, const Batch& batch) {
  const std::vector<std::string>& ids = batch.ids;
  const std::size_t n = ids.size();
  RawMget mget(redis.get());
  for (auto _ : state) {
    std::unordered_map<std::string, std::string> owners;
    mget.run(ids, [&](std::size_t i, const redisReply* value) { owners.emplace(ids[i], std::string(value->str, value->len)); });
    if (owners.size() != expectedOwners(n)) state.SkipWithError("raw MGET found the wrong owners");
    benchmark::DoNotOptimize(owners);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void libGetActive(benchmark::State& state, streamlock::Client& client, const Batch& batch) {
  const std::vector<std::string>& ids = batch.ids;
  const std::size_t n = ids.size();
  for (auto _ : state) {
    streamlock::ActiveStreams active = client.getActiveChatStreamIds(ids);
    if (active.status != streamlock::LookupStatus::Verified) {
      state.SkipWithError("getActiveChatStreamIds was not verified");
    } else if (active.owners.size() != expectedOwners(n)) {
      state.SkipWithError("getActiveChatStreamIds found the wrong owners");
    }
    benchmark::DoNotOptimize(active);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void libReconcile(benchmark::State& state, streamlock::Client& client, const Batch& batch) {
  const std::vector<streamlock::MarkerCandidate>& candidates = batch.candidates;
  const std::size_t n = candidates.size();
  for (auto _ : state) {
    streamlock::ReconcileResult result = client.reconcileChatStreamMarkers(candidates);
    if (result.status != streamlock::LookupStatus::Verified) {
      state.SkipWithError("reconcileChatStreamMarkers was not verified");
    } else if (result.markers.size() != n || result.markers.front().state != streamlock::MarkerState::Active) {
      state.SkipWithError("reconcileChatStreamMarkers answered the wrong markers");
    }
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

std::string name(const char* what, std::size_t n) { return std::string("lookup/") + what + "/" + std::to_string(n); }

}  // namespace

int main(int argc, char** argv) {
  bench::RawRedis redis(bench::redisUrl());
  seedLocks(redis);

  streamlock::Options options;
  options.redis.url = bench::redisUrl();
  options.redis.mgetChunkSize = kChunk;
  // Generous, so that a slow moment on a busy machine never turns a lookup unknown (which would
  // fail the benchmark); the deadline does not change the work of a lookup that meets it.
  options.redis.lookupDeadline = streamlock::Milliseconds{5000};
  options.lock.keyPrefix = bench::kKeyPrefix;
  options.logger = bench::quietLogger;
  streamlock::Client client(options);

  std::map<std::size_t, Batch> batches;
  for (std::size_t n : kSizes) batches.emplace(n, Batch(n));

  // Interleaved by size, so that each library figure sits next to its floor.
  for (std::size_t n : kSizes) {
    const Batch& batch = batches.at(n);
    benchmark::RegisterBenchmark(name("raw_mget", n).c_str(), rawMget, std::ref(redis), std::cref(batch))->UseRealTime();
    benchmark::RegisterBenchmark(name("raw_mget_map", n).c_str(), rawMgetMap, std::ref(redis), std::cref(batch))->UseRealTime();
    benchmark::RegisterBenchmark(name("lib_get_active", n).c_str(), libGetActive, std::ref(client), std::cref(batch))->UseRealTime();
    benchmark::RegisterBenchmark(name("lib_reconcile", n).c_str(), libReconcile, std::ref(client), std::cref(batch))->UseRealTime();
  }

  bench::SummaryReporter reporter;
  bool ran = bench::runBenchmarks(argc, argv, reporter);
  client.shutdown();
  removeLocks(redis);
  if (!ran) return 0;

  // One table for wall time (what a caller waits; the target is stated in it) and one for the
  // CPU time of the calling thread (the client-side work, much less noisy than a round trip).
  auto table = [&](const char* what, double (bench::SummaryReporter::*time)(const std::string&) const) {
    std::printf("\nLookup, %s per call in ns (median of repetitions); ratio = library / raw_mget\n", what);
    std::printf("%8s %12s %14s %16s %8s %16s %8s\n", "chats", "raw_mget", "raw_mget_map", "lib_get_active", "ratio",
                "lib_reconcile", "ratio");
    for (std::size_t n : kSizes) {
      double raw = (reporter.*time)(name("raw_mget", n));
      double rawMap = (reporter.*time)(name("raw_mget_map", n));
      double get = (reporter.*time)(name("lib_get_active", n));
      double reconcile = (reporter.*time)(name("lib_reconcile", n));
      std::printf("%8zu %12s %14s %16s %8s %16s %8s\n", n, bench::formatNs(raw).c_str(), bench::formatNs(rawMap).c_str(),
                  bench::formatNs(get).c_str(), bench::formatRatio(get, raw).c_str(),
                  bench::formatNs(reconcile).c_str(), bench::formatRatio(reconcile, raw).c_str());
    }
  };
  table("wall time", &bench::SummaryReporter::ns);
  table("CPU time of the calling thread", &bench::SummaryReporter::cpuNs);

  double raw = reporter.ns(name("raw_mget", 1000));
  double reconcile = reporter.ns(name("lib_reconcile", 1000));
  if (raw > 0 && reconcile > 0) {
    std::printf("\ntarget: reconciliation of 1,000 chats within 1.15x of the raw MGET (wall time): %.2fx, %s\n",
                reconcile / raw, reconcile / raw <= 1.15 ? "met" : "NOT met");
  }
  return 0;
}
