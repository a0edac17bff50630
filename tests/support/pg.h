#pragma once

// The tests' own PostgreSQL connection (libpq, parameterised statements) and throwaway tables
// shaped like the contract's copilot_chats.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "streamlock/reconcile.h"

struct pg_conn;
struct pg_result;

namespace streamlock::test {

using SqlParams = std::vector<std::optional<std::string>>;

struct PgResultFree {
  void operator()(pg_result* result) const noexcept;
};
using SqlResult = std::unique_ptr<pg_result, PgResultFree>;

class TestDb {
 public:
  // Connects to STREAMLOCK_TEST_DATABASE_URL.
  TestDb();
  explicit TestDb(const std::string& conninfo);
  ~TestDb();
  TestDb(const TestDb&) = delete;
  TestDb& operator=(const TestDb&) = delete;

  // Runs one statement; throws with the server's message when it fails.
  SqlResult exec(const std::string& sql, const SqlParams& params = {});
  // The first value of the first row, nullopt for NULL or no row.
  std::optional<std::string> scalar(const std::string& sql, const SqlParams& params = {});
  long long number(const std::string& sql, const SqlParams& params = {});

  // pg_stat_statements: calls of the UPDATE statements whose text names table. The view is
  // per cluster and never reset here: compare before and after.
  long long updateCalls(const std::string& table);

  // The backend pid of this connection.
  int backendPid();

 private:
  pg_conn* conn_ = nullptr;
};

// A uniquely named table "chats_<unique>" like copilot_chats, dropped on destruction.
class ChatsTable {
 public:
  explicit ChatsTable(TestDb& db);
  ~ChatsTable();
  ChatsTable(const ChatsTable&) = delete;
  ChatsTable& operator=(const ChatsTable&) = delete;

  const std::string& name() const noexcept { return name_; }

  // Inserts a chat with this marker and updated_at 2020-01-01; returns its id.
  std::string insert(const std::optional<std::string>& marker);
  std::optional<std::string> marker(const std::string& id);
  void setMarker(const std::string& id, const std::optional<std::string>& marker);
  // updated_at as text.
  std::string updatedAt(const std::string& id);
  // What a reader reads from the database: {id, marker} of these chats, in this order.
  std::vector<MarkerCandidate> candidates(const std::vector<std::string>& ids);

 private:
  TestDb& db_;
  std::string name_;
};

}  // namespace streamlock::test
