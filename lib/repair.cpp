// The repair of stale markers: compare-and-clear of a whole batch in one statement.
#include <fmt/format.h>

#include "client_state.h"
#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

std::string quoteIdentifier(const std::string& name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

// A PostgreSQL text[] literal, every element quoted: {"a","b \"c\""}.
template <typename Field>
std::string textArray(const std::vector<StaleMarker>& markers, Field field) {
  std::string out = "{";
  for (const auto& marker : markers) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char c : marker.*field) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

// Built on first use: the id and marker columns' types are looked up once, so that the arrays
// can be cast to them and the id comparison can use the table's index whatever its type.
std::string ClientState::repairStatement() {
  std::lock_guard<std::mutex> guard(repairMutex_);
  if (!repairSql_.empty()) return repairSql_;
  const RepairOptions& r = options_.repair;
  PgResult columns = repairPostgres_->execute(
      "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
      "WHERE a.attrelid = to_regclass($1) AND a.attname IN ($2, $3) AND a.attnum > 0 AND NOT a.attisdropped",
      {quoteIdentifier(r.table), r.idColumn, r.markerColumn});
  std::string idType, markerType;
  for (int row = 0; row < columns.rows(); ++row) {
    std::string_view name = columns.value(row, 0);
    if (name == r.idColumn) idType = columns.value(row, 1);
    if (name == r.markerColumn) markerType = columns.value(row, 1);
  }
  if (idType.empty() || markerType.empty()) {
    throw Error(ErrorCode::InvalidArgument, fmt::format("repair table {} with columns {} and {} not found",
                                                        quoteIdentifier(r.table), quoteIdentifier(r.idColumn),
                                                        quoteIdentifier(r.markerColumn)));
  }
  // format_type() returns a type name that is safe to splice (quoted where needed).
  repairSql_ = fmt::format(
      "UPDATE {0} AS chat SET {2} = NULL FROM unnest($1::text[], $2::text[]) AS stale(id, marker) "
      "WHERE chat.{1} = stale.id::{3} AND chat.{2} = stale.marker::{4}",
      quoteIdentifier(r.table), quoteIdentifier(r.idColumn), quoteIdentifier(r.markerColumn), idType, markerType);
  return repairSql_;
}

RepairResult ClientState::repair(const std::vector<StaleMarker>& markers) noexcept {
  RepairResult out;
  if (markers.empty()) return out;
  const LatencyTimer timer(repairLatency_);
  try {
    if (!repairPostgres_) throw Error(ErrorCode::InvalidArgument, "repair needs PostgreSQL (postgres.conninfo is empty)");
    if (shutDown_) throw Error(ErrorCode::ShutDown, "the client is shut down");
    std::string sql = repairStatement();
    PgResult result = repairPostgres_->execute(
        sql, {textArray(markers, &StaleMarker::chatId), textArray(markers, &StaleMarker::marker)},
        options_.repair.statementTimeout + options_.repair.lockTimeout);
    out.cleared = result.affectedRows();
    bump(counters_.markersRepaired, out.cleared);
    if (out.cleared > 0) log(LogLevel::Info, "repaired {} stale stream markers", out.cleared);
  } catch (const std::exception& e) {
    out.failed = true;
    bump(counters_.repairFailures);
    log(LogLevel::Warning, "repair of {} stale stream markers failed (a later read retries): {}", markers.size(),
        e.what());
  }
  return out;
}

bool ClientState::updateMarker(const std::string& chatId, const std::string* streamId, const std::string& expected) {
  if (!postgres_) throw Error(ErrorCode::InvalidArgument, "markers need PostgreSQL (postgres.conninfo is empty)");
  const RepairOptions& r = options_.repair;
  std::string table = quoteIdentifier(r.table), id = quoteIdentifier(r.idColumn),
              marker = quoteIdentifier(r.markerColumn);
  PgResult result;
  if (streamId) {
    result = postgres_->execute(fmt::format("UPDATE {} SET {} = $2 WHERE {} = $1", table, marker, id),
                                {chatId, *streamId});
  } else {
    result = postgres_->execute(fmt::format("UPDATE {} SET {} = NULL WHERE {} = $1 AND {} = $2", table, marker, id, marker),
                                {chatId, expected});
  }
  return result.affectedRows() > 0;
}

}  // namespace streamlock::detail
