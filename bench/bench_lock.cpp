// The writer side: the library's stream lock against the same Redis commands sent by hand on a
// blocking hiredis context.
//
//   lock/raw_ping                      one round trip, for scale.
//   lock/raw_set_nx+evalsha_del        floor of acquire+release: SET key stream NX EX 60, then
//                                      EVALSHA compare-and-delete (2 round trips).
//   lock/lib_acquire+release           Client::acquireStreamLock + StreamLock::release
//                                      (the same 2 round trips, plus pool, pending map, held set).
//   lock/lib_acquire+heartbeat+release the same with a Heartbeat started and stopped in between
//                                      (registration with the heartbeat thread; no extend is sent,
//                                      the interval is 20 s).
//   lock/raw_evalsha_extend            one heartbeat extend on the wire: EVALSHA compare-and-expire
//                                      (1 round trip). The library sends exactly this, pipelined
//                                      for all due locks, from its heartbeat thread; the public API
//                                      has no way to time one extend, so it is not measured here.
// Every iteration checks the answer (OK / 1 / Released); a wrong one fails the benchmark.

#include <functional>
#include <optional>
#include <string>

#include "bench_support.h"
#include "streamlock/streamlock.h"

namespace {

// The same scripts as lib/client.cpp (kExtendScript, kReleaseScript).
const char* const kExtendScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('EXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const char* const kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) else return 0 end";

const std::string kChat = bench::chatId(424242);
const std::string kKey = bench::kKeyPrefix + kChat;
const std::string kStream = bench::streamId(424242);

std::string loadScript(bench::RawRedis& redis, const char* source) {
  bench::Reply reply = bench::RawRedis::check(redis.command({"SCRIPT", "LOAD", source}));
  return std::string(reply->str, reply->len);
}

bool isIntegerOne(const bench::Reply& reply) { return reply->type == REDIS_REPLY_INTEGER && reply->integer == 1; }

void rawPing(benchmark::State& state, bench::RawRedis& redis) {
  for (auto _ : state) {
    bench::Reply reply = redis.command({"PING"});
    benchmark::DoNotOptimize(reply.get());
  }
}

void rawAcquireRelease(benchmark::State& state, bench::RawRedis& redis, const std::string& releaseSha) {
  for (auto _ : state) {
    bench::Reply set = redis.command({"SET", kKey, kStream, "NX", "EX", "60"});
    if (set->type != REDIS_REPLY_STATUS) state.SkipWithError("raw SET NX did not acquire");
    bench::Reply del = redis.command({"EVALSHA", releaseSha, "1", kKey, kStream});
    if (!isIntegerOne(del)) state.SkipWithError("raw compare-and-delete did not release");
  }
}

void libAcquireRelease(benchmark::State& state, streamlock::Client& client) {
  for (auto _ : state) {
    std::optional<streamlock::StreamLock> lock = client.acquireStreamLock(kChat, kStream);
    if (!lock || lock->release() != streamlock::ReleaseOutcome::Released) {
      state.SkipWithError("library acquire+release failed");
    }
  }
}

void libAcquireHeartbeatRelease(benchmark::State& state, streamlock::Client& client) {
  for (auto _ : state) {
    std::optional<streamlock::StreamLock> lock = client.acquireStreamLock(kChat, kStream);
    if (!lock) {
      state.SkipWithError("library acquire failed");
      continue;
    }
    streamlock::Heartbeat heartbeat = lock->startHeartbeat();
    heartbeat.stop();
    if (lock->release() != streamlock::ReleaseOutcome::Released) state.SkipWithError("library release failed");
  }
}

void rawExtend(benchmark::State& state, bench::RawRedis& redis, const std::string& extendSha) {
  bench::RawRedis::check(redis.command({"SET", kKey, kStream, "EX", "60"}));
  for (auto _ : state) {
    bench::Reply reply = redis.command({"EVALSHA", extendSha, "1", kKey, kStream, "60"});
    if (!isIntegerOne(reply)) state.SkipWithError("raw compare-and-expire did not extend");
  }
  redis.command({"DEL", kKey});
}

}  // namespace

int main(int argc, char** argv) {
  bench::RawRedis redis(bench::redisUrl());
  redis.command({"DEL", kKey});
  const std::string releaseSha = loadScript(redis, kReleaseScript);
  const std::string extendSha = loadScript(redis, kExtendScript);

  streamlock::Options options;
  options.redis.url = bench::redisUrl();
  options.lock.keyPrefix = bench::kKeyPrefix;
  options.logger = bench::quietLogger;
  streamlock::Client client(options);

  benchmark::RegisterBenchmark("lock/raw_ping", rawPing, std::ref(redis))->UseRealTime();
  benchmark::RegisterBenchmark("lock/raw_set_nx+evalsha_del", rawAcquireRelease, std::ref(redis), releaseSha)
      ->UseRealTime();
  benchmark::RegisterBenchmark("lock/lib_acquire+release", libAcquireRelease, std::ref(client))->UseRealTime();
  benchmark::RegisterBenchmark("lock/lib_acquire+heartbeat+release", libAcquireHeartbeatRelease, std::ref(client))
      ->UseRealTime();
  benchmark::RegisterBenchmark("lock/raw_evalsha_extend", rawExtend, std::ref(redis), extendSha)->UseRealTime();

  bench::SummaryReporter reporter;
  bool ran = bench::runBenchmarks(argc, argv, reporter);
  client.shutdown();
  redis.command({"DEL", kKey});
  if (!ran) return 0;

  // Wall time is what a writer waits (mostly round trips); CPU time of the calling thread is the
  // client-side work, which a busy machine disturbs much less.
  struct Row {
    const char* label;
    const char* name;
    const char* roundTrips;
  };
  const Row rows[] = {
      {"raw PING", "lock/raw_ping", "1"},
      {"raw SET NX EX + EVALSHA del", "lock/raw_set_nx+evalsha_del", "2"},
      {"library acquire + release", "lock/lib_acquire+release", "2"},
      {"library acquire + heartbeat + release", "lock/lib_acquire+heartbeat+release", "2"},
      {"raw EVALSHA compare-and-expire", "lock/raw_evalsha_extend", "1"},
  };
  const std::string floor = "lock/raw_set_nx+evalsha_del";
  std::printf("\nLock: library vs raw commands, per operation (median of repetitions); ratio = x / raw SET+EVALSHA\n");
  std::printf("%-38s %7s %10s %7s %10s %7s\n", "operation", "trips", "wall ns", "ratio", "CPU ns", "ratio");
  for (const Row& row : rows) {
    bool library = std::string(row.name).find("/lib_") != std::string::npos;
    double wall = reporter.ns(row.name), cpu = reporter.cpuNs(row.name);
    std::printf("%-38s %7s %10s %7s %10s %7s\n", row.label, row.roundTrips, bench::formatNs(wall).c_str(),
                library ? bench::formatRatio(wall, reporter.ns(floor)).c_str() : "",
                bench::formatNs(cpu).c_str(), library ? bench::formatRatio(cpu, reporter.cpuNs(floor)).c_str() : "");
  }
  std::printf("The library's heartbeat extend is not timed: it runs on the heartbeat thread with no per-call\n"
              "hook. On the wire it is the raw EVALSHA compare-and-expire above, one per due lock, pipelined.\n");
  return 0;
}
