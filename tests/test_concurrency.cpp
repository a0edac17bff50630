// Many threads at once on two Clients (two "processes"): lookups, reconciles with repair, and
// acquire / heartbeat / release on shared and distinct chats. Bounded to a few seconds; also run
// under TSan. Worker threads only record; the main thread asserts.
#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "capture_log.h"
#include "client_options.h"
#include "env.h"
#include "pg.h"
#include "redis_client.h"
#include "streamlock/client.h"

using streamlock::Client;
using streamlock::LookupStatus;
using streamlock::ReleaseOutcome;
using namespace std::chrono_literals;
namespace test = streamlock::test;

namespace {

// What one worker saw; any non-empty problem fails the test.
struct WorkerReport {
  std::uint64_t acquired = 0;
  std::uint64_t released = 0;
  std::uint64_t lookups = 0;
  std::uint64_t reconciles = 0;
  std::uint64_t repaired = 0;
  std::vector<std::string> problems;
};

}  // namespace

TEST_CASE("many threads on shared and distinct chats keep every invariant") {
  test::TestDb db;
  test::ChatsTable chats(db);
  test::CapturedLog log;
  auto options = test::clientOptions(test::redisUrl(), log, chats);
  options.repair.lockTimeout = 5s;           // rows are contended here; deadlines are tested elsewhere
  options.redis.lookupDeadline = 5s;         // and this must hold under TSan
  options.redis.commandTimeout = 5s;
  options.lock.ttl = 10s;                    // longer than commandTimeout + 500 ms (options are validated)
  options.lock.heartbeatInterval = 20ms;     // the heartbeat thread is busy throughout
  std::array<Client, 2> clients{Client(options), Client(options)};

  constexpr int threads = 8;
  constexpr int iterations = 150;
  const std::vector<std::string> shared{"shared-0", "shared-1", "shared-2"};
  // Stale markers that every thread tries to repair: each is cleared exactly once.
  std::vector<std::string> staleIds;
  for (int i = 0; i < 8; ++i) staleIds.push_back(chats.insert("stream-stale-" + std::to_string(i)));
  const auto staleCandidates = chats.candidates(staleIds);

  // holders[i]: how many streams believe they hold shared[i]; never more than one.
  std::array<std::atomic<int>, 3> holders{};
  std::atomic<int> overlaps{0};
  std::vector<WorkerReport> reports(threads);
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;

  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      Client& client = clients[static_cast<std::size_t>(t % 2)];
      WorkerReport& report = reports[static_cast<std::size_t>(t)];
      const std::string own = "own-" + std::to_string(t);
      while (!go.load()) std::this_thread::yield();

      for (int i = 0; i < iterations; ++i) {
        const std::string stream = "stream-" + std::to_string(t) + "-" + std::to_string(i);
        const std::size_t which = static_cast<std::size_t>(i + t) % shared.size();
        try {
          // A shared chat: at most one holder at any time.
          if (auto lock = client.acquireStreamLock(shared[which], stream)) {
            ++report.acquired;
            if (holders[which].fetch_add(1) != 0) overlaps.fetch_add(1);
            auto heartbeat = lock->startHeartbeat();
            const auto seen = client.getActiveChatStreamIds({shared[which]});
            ++report.lookups;
            if (seen.status != LookupStatus::Verified) report.problems.push_back("lookup not verified");
            const auto owner = seen.owners.find(shared[which]);
            if (owner == seen.owners.end() || owner->second != stream) {
              report.problems.push_back("holder of " + shared[which] + " not seen as its owner");
            }
            holders[which].fetch_sub(1);
            if (heartbeat.ownershipLost()) report.problems.push_back("ownership lost on " + shared[which]);
            if (lock->release() == ReleaseOutcome::Released) {
              ++report.released;
            } else {
              report.problems.push_back("release of " + shared[which] + " not Released");
            }
          }
          // A chat of its own: always free.
          auto mine = client.acquireStreamLock(own, stream);
          if (!mine) {
            report.problems.push_back("own chat " + own + " not acquired");
          } else {
            ++report.acquired;
            if (mine->release() == ReleaseOutcome::Released) ++report.released;
            else report.problems.push_back("release of " + own + " not Released");
          }
          // Readers: a batch lookup and a reconcile with repair.
          const auto batch = client.getActiveChatStreamIds({shared[0], shared[1], shared[2], own});
          ++report.lookups;
          if (batch.status != LookupStatus::Verified) report.problems.push_back("batch lookup not verified");
          const auto reconciled = client.reconcileChatStreamMarkers(staleCandidates, {true});
          ++report.reconciles;
          report.repaired += reconciled.repair.cleared;
          if (reconciled.status != LookupStatus::Verified) report.problems.push_back("reconcile not verified");
          if (reconciled.repair.failed) report.problems.push_back("repair failed");
        } catch (const std::exception& error) {
          report.problems.push_back(std::string("exception: ") + error.what());
        }
      }
    });
  }
  go = true;
  for (auto& worker : workers) worker.join();

  std::uint64_t acquired = 0;
  std::uint64_t released = 0;
  std::uint64_t repaired = 0;
  for (const auto& report : reports) {
    for (const auto& problem : report.problems) FAIL_CHECK(problem);
    acquired += report.acquired;
    released += report.released;
    repaired += report.repaired;
  }
  CHECK(overlaps.load() == 0);
  CHECK(acquired >= static_cast<std::uint64_t>(threads * iterations));  // every own chat, plus the shared ones won
  CHECK(released == acquired);
  CHECK(repaired == staleIds.size());  // compare-and-clear clears each marker once

  const auto first = clients[0].counters();
  const auto second = clients[1].counters();
  CHECK(first.locksAcquired + second.locksAcquired == acquired);
  CHECK(first.locksReleased + second.locksReleased == released);
  CHECK(first.markersRepaired + second.markersRepaired == staleIds.size());
  CHECK(first.lookupsUnknown + second.lookupsUnknown == 0);
  CHECK(first.redisErrors + second.redisErrors == 0);
  CHECK(first.repairFailures + second.repairFailures == 0);
  CHECK(first.heartbeatsLost + second.heartbeatsLost == 0);
  CHECK(clients[0].pendingStreams().size() == 0);
  CHECK(clients[1].pendingStreams().size() == 0);
  for (const auto& id : staleIds) CHECK(chats.marker(id) == std::nullopt);
  CHECK(test::TestRedis(test::redisUrl()).keys(options.lock.keyPrefix + "*").empty());
}
