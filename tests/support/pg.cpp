#include "pg.h"

#include <libpq-fe.h>

#include <stdexcept>

#include "env.h"

namespace streamlock::test {

void PgResultFree::operator()(pg_result* result) const noexcept { PQclear(result); }

TestDb::TestDb() : TestDb(databaseUrl()) {}

TestDb::TestDb(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string why = PQerrorMessage(conn_);
    PQfinish(conn_);
    throw std::runtime_error("TestDb: cannot connect: " + why);
  }
  exec("SET client_min_messages = warning");
}

TestDb::~TestDb() { PQfinish(conn_); }

SqlResult TestDb::exec(const std::string& sql, const SqlParams& params) {
  std::vector<const char*> values;
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  SqlResult result(PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                nullptr, nullptr, 0));
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error("TestDb: " + sql + ": " + PQerrorMessage(conn_));
  }
  return result;
}

std::optional<std::string> TestDb::scalar(const std::string& sql, const SqlParams& params) {
  const SqlResult result = exec(sql, params);
  if (PQntuples(result.get()) == 0 || PQgetisnull(result.get(), 0, 0) != 0) return std::nullopt;
  return std::string(PQgetvalue(result.get(), 0, 0));
}

long long TestDb::number(const std::string& sql, const SqlParams& params) {
  const auto value = scalar(sql, params);
  if (!value) throw std::runtime_error("TestDb: no number from " + sql);
  return std::stoll(*value);
}

long long TestDb::updateCalls(const std::string& table) {
  return number(
      "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements "
      "WHERE strpos(query, $1) > 0 AND query ~* '\\mupdate\\M'",
      {table});
}

int TestDb::backendPid() { return PQbackendPID(conn_); }

ChatsTable::ChatsTable(TestDb& db) : db_(db), name_("chats_" + uniqueId()) {
  db_.exec("CREATE TABLE " + name_ +
           " (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id text NOT NULL DEFAULT 'u1',"
           " title text, conversation_id text, messages jsonb NOT NULL DEFAULT '[]',"
           " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())");
}

ChatsTable::~ChatsTable() {
  try {
    db_.exec("DROP TABLE IF EXISTS " + name_);
  } catch (...) {
    // A failed test may have left the connection in a bad state; the cluster is throwaway.
  }
}

std::string ChatsTable::insert(const std::optional<std::string>& marker) {
  return *db_.scalar("INSERT INTO " + name_ +
                         " (conversation_id, updated_at) VALUES ($1, '2020-01-01T00:00:00Z') RETURNING id",
                     {marker});
}

std::optional<std::string> ChatsTable::marker(const std::string& id) {
  return db_.scalar("SELECT conversation_id FROM " + name_ + " WHERE id = $1", {id});
}

void ChatsTable::setMarker(const std::string& id, const std::optional<std::string>& marker) {
  db_.exec("UPDATE " + name_ + " SET conversation_id = $2 WHERE id = $1", {id, marker});
}

std::string ChatsTable::updatedAt(const std::string& id) {
  return *db_.scalar("SELECT updated_at::text FROM " + name_ + " WHERE id = $1", {id});
}

std::vector<MarkerCandidate> ChatsTable::candidates(const std::vector<std::string>& ids) {
  std::vector<MarkerCandidate> result;
  for (const auto& id : ids) result.push_back({id, marker(id)});
  return result;
}

}  // namespace streamlock::test
