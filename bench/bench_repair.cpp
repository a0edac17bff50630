// The repair: Client::repairStaleMarkers of 1,000 stale markers against the same statement sent
// by hand through libpq, on a table of 10,000 chats shaped like the demo's copilot_chats.
//
//   repair/raw_exec_params/1000    floor: build the two text[] literals, PQexecParams of the
//                                  library's statement (parsed and planned on every call).
//   repair/raw_exec_prepared/1000  the same through PQprepare once + PQexecPrepared, which is what
//                                  the library does (postgres.prepareStatements is on by default).
//   repair/lib_repair/1000         Client::repairStaleMarkers(markers).
// The statement, as the library builds it for this table:
//   UPDATE "t" AS chat SET "conversation_id" = NULL FROM unnest($1::text[], $2::text[])
//   AS stale(id, marker) WHERE chat."id" = stale.id::uuid AND chat."conversation_id" = stale.marker::text
// Between iterations, with the clock paused, one UPDATE puts the 1,000 markers back. Every
// iteration checks that exactly 1,000 rows were cleared.

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "streamlock/streamlock.h"

namespace {

constexpr std::size_t kChats = 10000;
constexpr std::size_t kStale = 1000;  // every tenth chat
const std::string kTable = "streamlock_bench_chats";

const std::string kRepairSql =
    "UPDATE \"" + kTable + "\" AS chat SET \"conversation_id\" = NULL "
    "FROM unnest($1::text[], $2::text[]) AS stale(id, marker) "
    "WHERE chat.\"id\" = stale.id::uuid AND chat.\"conversation_id\" = stale.marker::text";

const std::string kResetSql =
    "UPDATE " + kTable + " AS chat SET conversation_id = seed.marker "
    "FROM unnest($1::text[], $2::text[]) AS seed(id, marker) WHERE chat.id = seed.id::uuid";

// A PostgreSQL text[] literal with every element quoted, as lib/repair.cpp builds it.
std::string textArray(const std::vector<std::string>& values) {
  std::string out = "{";
  for (const auto& value : values) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char c : value) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

struct Fixture {
  std::vector<std::string> ids;      // the stale chats
  std::vector<std::string> markers;  // their markers
  std::vector<streamlock::StaleMarker> stale;
  std::string idArray;
  std::string markerArray;
};

Fixture makeFixture() {
  Fixture f;
  for (std::size_t i = 0; i < kChats; i += kChats / kStale) {
    f.ids.push_back(bench::chatId(i));
    f.markers.push_back(bench::streamId(i));
    f.stale.push_back({f.ids.back(), f.markers.back()});
  }
  f.idArray = textArray(f.ids);
  f.markerArray = textArray(f.markers);
  return f;
}

void createTable(bench::RawPg& pg) {
  std::vector<std::string> all;
  for (std::size_t i = 0; i < kChats; ++i) all.push_back(bench::chatId(i));
  pg.exec("DROP TABLE IF EXISTS " + kTable);
  pg.exec("CREATE TABLE " + kTable +
          " (id uuid PRIMARY KEY, user_id text NOT NULL, title text, conversation_id text, "
          "messages jsonb NOT NULL DEFAULT '[]', updated_at timestamptz NOT NULL DEFAULT now())");
  pg.exec("INSERT INTO " + kTable + " (id, user_id, title) SELECT id::uuid, 'bench-user', 'chat ' || id FROM unnest($1::text[]) AS id",
          {textArray(all)});
  pg.exec("VACUUM ANALYZE " + kTable);
}

// Puts the 1,000 stale markers back, with the clock paused.
void reset(benchmark::State& state, bench::RawPg& pg, const Fixture& f) {
  state.PauseTiming();
  pg.exec(kResetSql, {f.idArray, f.markerArray});
  state.ResumeTiming();
}

std::uint64_t affectedRows(const bench::PgResultPtr& result) { return std::strtoull(PQcmdTuples(result.get()), nullptr, 10); }

void rawExecParams(benchmark::State& state, bench::RawPg& pg, const Fixture& f) {
  for (auto _ : state) {
    reset(state, pg, f);
    std::string ids = textArray(f.ids);
    std::string markers = textArray(f.markers);
    const char* values[] = {ids.c_str(), markers.c_str()};
    bench::PgResultPtr result(PQexecParams(pg.get(), kRepairSql.c_str(), 2, nullptr, values, nullptr, nullptr, 0));
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK || affectedRows(result) != kStale) {
      state.SkipWithError("raw repair did not clear the markers");
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kStale));
}

void rawExecPrepared(benchmark::State& state, bench::RawPg& pg, const Fixture& f) {
  pg.check(bench::PgResultPtr(PQprepare(pg.get(), "bench_repair", kRepairSql.c_str(), 2, nullptr)));
  for (auto _ : state) {
    reset(state, pg, f);
    std::string ids = textArray(f.ids);
    std::string markers = textArray(f.markers);
    const char* values[] = {ids.c_str(), markers.c_str()};
    bench::PgResultPtr result(PQexecPrepared(pg.get(), "bench_repair", 2, values, nullptr, nullptr, 0));
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK || affectedRows(result) != kStale) {
      state.SkipWithError("raw prepared repair did not clear the markers");
    }
  }
  pg.exec("DEALLOCATE bench_repair");
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kStale));
}

void libRepair(benchmark::State& state, bench::RawPg& pg, streamlock::Client& client, const Fixture& f) {
  for (auto _ : state) {
    reset(state, pg, f);
    streamlock::RepairResult result = client.repairStaleMarkers(f.stale);
    if (result.failed || result.cleared != kStale) state.SkipWithError("library repair did not clear the markers");
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kStale));
}

}  // namespace

int main(int argc, char** argv) {
  bench::RawPg pg(bench::databaseUrl());
  createTable(pg);
  // The library's repair sessions run with these bounds; the raw connection gets the same.
  pg.exec("SET lock_timeout = '100ms'");
  pg.exec("SET statement_timeout = '100ms'");
  const Fixture fixture = makeFixture();

  streamlock::Options options;
  options.postgres.conninfo = bench::databaseUrl();
  options.repair.table = kTable;
  options.logger = bench::quietLogger;
  streamlock::Client client(options);
  // Outside the clock: the repair pool's first connection and the one-time column-type lookup.
  pg.exec(kResetSql, {fixture.idArray, fixture.markerArray});
  if (client.repairStaleMarkers(fixture.stale).cleared != kStale) {
    std::fprintf(stderr, "the library's warm-up repair did not clear %zu markers\n", kStale);
    return 1;
  }

  benchmark::RegisterBenchmark("repair/raw_exec_params/1000", rawExecParams, std::ref(pg), std::cref(fixture))
      ->UseRealTime();
  benchmark::RegisterBenchmark("repair/raw_exec_prepared/1000", rawExecPrepared, std::ref(pg), std::cref(fixture))
      ->UseRealTime();
  benchmark::RegisterBenchmark("repair/lib_repair/1000", libRepair, std::ref(pg), std::ref(client), std::cref(fixture))
      ->UseRealTime();

  bench::SummaryReporter reporter;
  bool ran = bench::runBenchmarks(argc, argv, reporter);
  client.shutdown();
  pg.exec("DROP TABLE IF EXISTS " + kTable);
  if (!ran) return 0;

  const std::string lib = "repair/lib_repair/1000";
  std::printf("\nRepair of 1,000 stale markers, per statement (median of repetitions; the reset is not timed)\n");
  std::printf("%-32s %10s %14s %10s %14s\n", "", "wall ns", "library/this", "CPU ns", "library/this");
  for (const auto& [label, name] : {std::pair<const char*, std::string>{"raw PQexecParams", "repair/raw_exec_params/1000"},
                                    {"raw PQprepare + PQexecPrepared", "repair/raw_exec_prepared/1000"},
                                    {"library repairStaleMarkers", lib}}) {
    bool isLib = name == lib;
    std::printf("%-32s %10s %14s %10s %14s\n", label, bench::formatNs(reporter.ns(name)).c_str(),
                isLib ? "" : bench::formatRatio(reporter.ns(lib), reporter.ns(name)).c_str(),
                bench::formatNs(reporter.cpuNs(name)).c_str(),
                isLib ? "" : bench::formatRatio(reporter.cpuNs(lib), reporter.cpuNs(name)).c_str());
  }
  return 0;
}
