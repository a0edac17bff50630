// The repair of stale markers (one compare-and-clear statement for a whole batch, bounded as a
// whole by repair.lockTimeout + repair.statementTimeout) and the writer's marker statements.
#include "client/core.h"
#include "pg/access.h"

namespace streamlock::detail {
namespace {

// A statement in flight, completed once: by its answer or, at shutdown, as failed.
template <typename T>
class StatementOperation final : public Operation {
 public:
  using Done = std::function<void(Result<T>)>;
  explicit StatementOperation(Done done) : done_(std::move(done)) {}

  void abortForShutdown() override { finish(Error(ErrorCode::ShutDown, "the client is shut down")); }

  // Returns false when already finished (a late answer after shutdown).
  bool finish(Result<T> outcome) {
    if (finished_) return false;
    finished_ = true;
    auto done = std::move(done_);
    done(std::move(outcome));
    return true;
  }

  std::uint64_t key = 0;

 private:
  Done done_;
  bool finished_ = false;
};

}  // namespace

void ClientCore::repair(std::vector<StaleMarker> markers, std::function<void(RepairResult)> then) {
  if (markers.empty()) return then(RepairResult{});
  const Deadline start = Clock::now();
  auto done = [this, start, then = std::move(then)](RepairResult result) {
    repairLatency_.record(Clock::now() - start);
    then(result);
  };
  // One deadline for the whole repair, connecting and the one-time column lookup included.
  const Deadline deadline = deadlineIn(options_.repair.lockTimeout + options_.repair.statementTimeout);
  auto fail = [this](std::size_t count, const std::string& why) {
    bump(counters_.repairFailures);
    log(LogLevel::Warning, "repair of {} stale stream markers failed (a later read retries): {}", count, why);
    RepairResult result;
    result.failed = true;
    return result;
  };
  if (!repairPostgres_) return done(fail(markers.size(), "repair needs PostgreSQL (postgres.conninfo is empty)"));
  if (!usable()) return done(fail(markers.size(), "the client is shut down"));
  auto shared = std::make_shared<std::pair<std::vector<StaleMarker>, std::function<void(RepairResult)>>>(
      std::move(markers), std::move(done));
  const bool posted = onLoop([this, shared, deadline, fail] {
    auto& [stale, finish] = *shared;
    if (closing_) return finish(fail(stale.size(), "the client is shut down"));
    runRepair(std::move(stale), deadline, std::move(finish));
  });
  if (!posted) shared->second(fail(shared->first.size(), "the client is shut down"));
}

void ClientCore::runRepair(std::vector<StaleMarker> markers, Deadline deadline,
                           std::function<void(RepairResult)> done) {
  const std::size_t count = markers.size();
  auto operation = std::make_shared<StatementOperation<RepairResult>>(
      [this, count, done = std::move(done)](Result<RepairResult> outcome) {
        if (!outcome) {
          bump(counters_.repairFailures);
          log(LogLevel::Warning, "repair of {} stale stream markers failed (a later read retries): {}", count,
              outcome.error()->what());
          RepairResult failed;
          failed.failed = true;
          return done(failed);
        }
        const RepairResult result = outcome.value();
        bump(counters_.markersRepaired, result.cleared);
        if (result.cleared > 0) log(LogLevel::Info, "repaired {} stale stream markers", result.cleared);
        done(result);
      });
  operation->key = started(operation);
  StatementLimits limits;
  limits.acquireBy = deadline;
  limits.timeout = options_.repair.statementTimeout + options_.repair.lockTimeout;
  limits.notAfter = deadline;
  auto finish = [this, operation](Result<RepairResult> outcome) {
    if (operation->finish(std::move(outcome))) finished(operation->key);
  };
  auto stale = std::make_shared<const std::vector<StaleMarker>>(std::move(markers));
  auto update = [this, stale, limits, finish](const std::string& sql) {
    PgPoolAccess::execute(*repairPostgres_, sql, protocol::repairParameters(*stale), limits,
                          [this, stale, sql, limits, finish](Result<PgResult> result) {
      const Error* error = result.error();
      if (error == nullptr) return finish(RepairResult{result.value().affectedRows(), false});
      // A data exception (SQLSTATE class 22: an id or a marker that does not convert to its column's
      // type) fails the whole statement. Each marker is then tried alone, so that one bad
      // candidate does not keep the others stale on every read.
      if (stale->size() > 1 && error->sqlstate().rfind("22", 0) == 0) return repairEach(sql, stale, limits, finish);
      finish(*error);
    });
  };
  {
    std::lock_guard<std::mutex> guard(repairMutex_);
    if (!repairSql_.empty()) return update(repairSql_);
  }
  // The first repair looks the column types up, so that the arrays are cast to them and the id
  // comparison can use the table's index whatever its type.
  const protocol::Statement columns = protocol::columnTypesQuery(options_.repair);
  PgPoolAccess::execute(*repairPostgres_, columns.sql, columns.params, limits,
                [this, update, finish](Result<PgResult> result) {
                  if (!result) return finish(*result.error());
                  const PgResult& rows = result.value();
                  const RepairOptions& r = options_.repair;
                  std::string idType, markerType;
                  for (int row = 0; row < rows.rows(); ++row) {
                    const std::string_view name = rows.value(row, 0);
                    if (name == r.idColumn) idType = rows.value(row, 1);
                    if (name == r.markerColumn) markerType = rows.value(row, 1);
                  }
                  if (idType.empty() || markerType.empty()) {
                    return finish(Error(ErrorCode::InvalidArgument,
                                        fmt::format("repair table {} with columns {} and {} not found",
                                                    protocol::quoteIdentifier(r.table),
                                                    protocol::quoteIdentifier(r.idColumn),
                                                    protocol::quoteIdentifier(r.markerColumn))));
                  }
                  std::string sql = protocol::repairSql(r, idType, markerType);
                  {
                    std::lock_guard<std::mutex> guard(repairMutex_);
                    repairSql_ = sql;
                  }
                  update(sql);
                });
}

void ClientCore::repairEach(const std::string& sql, const std::shared_ptr<const std::vector<StaleMarker>>& stale,
                            const StatementLimits& limits, std::function<void(Result<RepairResult>)> finish) {
  struct Tally {
    std::size_t pending = 0;
    RepairResult result;
    std::size_t failed = 0;
    std::string firstError;
  };
  auto tally = std::make_shared<Tally>();
  tally->pending = stale->size();
  for (const StaleMarker& marker : *stale) {
    // Sent together: they pipeline on the pool's connections, under the one deadline.
    PgPoolAccess::execute(*repairPostgres_, sql, protocol::repairParameters({marker}), limits,
                          [this, tally, total = stale->size(), finish](Result<PgResult> result) {
      if (const Error* error = result.error()) {
        if (tally->failed++ == 0) tally->firstError = error->what();
      } else {
        tally->result.cleared += result.value().affectedRows();
      }
      if (--tally->pending > 0) return;
      if (tally->failed > 0) {
        tally->result.failed = true;
        bump(counters_.repairFailures);
        log(LogLevel::Warning, "repair of {} of {} stale stream markers failed (a later read retries): {}",
            tally->failed, total, tally->firstError);
      }
      finish(tally->result);
    });
  }
}

void ClientCore::updateMarker(std::string chatId, std::optional<std::string> streamId, std::string expected,
                              std::function<void(Result<bool>)> done) {
  if (!postgres_) {
    return done(Error(ErrorCode::InvalidArgument, "markers need PostgreSQL (postgres.conninfo is empty)"));
  }
  if (!usable()) return done(Error(ErrorCode::ShutDown, "the client is shut down"));
  protocol::Statement statement = streamId ? protocol::writeMarkerStatement(options_.repair, chatId, *streamId)
                                           : protocol::clearMarkerStatement(options_.repair, chatId, expected);
  // The bound writeMarker and clearMarker document, a retry on a fresh connection included.
  const StatementLimits limits = PgPoolAccess::callLimits(*postgres_, std::nullopt);
  auto shared = std::make_shared<std::pair<protocol::Statement, std::function<void(Result<bool>)>>>(
      std::move(statement), std::move(done));
  const bool posted = onLoop([this, shared, limits] {
    auto& [toRun, finish] = *shared;
    if (closing_) return finish(Error(ErrorCode::ShutDown, "the client is shut down"));
    auto operation = std::make_shared<StatementOperation<bool>>(std::move(finish));
    operation->key = started(operation);
    PgPoolAccess::execute(*postgres_, std::move(toRun.sql), std::move(toRun.params), limits,
                  [this, operation](Result<PgResult> result) {
                    Result<bool> changed = result ? Result<bool>(result.value().affectedRows() > 0)
                                                  : Result<bool>(*result.error());
                    if (operation->finish(std::move(changed))) finished(operation->key);
                  });
  });
  if (!posted) shared->second(Error(ErrorCode::ShutDown, "the client is shut down"));
}

}  // namespace streamlock::detail
