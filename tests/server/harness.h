#pragma once

// Support for the HTTP tests of mothership_server: a private database per test process, seeding
// helpers, the server as a child process on a free port, Redis keys, a private redis-server, and
// Chromium. Setup failures throw std::runtime_error; assertions stay in the tests' main thread.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

struct pg_conn;
struct redisContext;
struct redisReply;

namespace servertest {

using Json = nlohmann::json;
using Params = std::vector<std::optional<std::string>>;
using Row = std::vector<std::optional<std::string>>;

// The value of an environment variable the tests need; throws naming it when unset.
std::string requireEnv(const char* name);

// Polls `condition` every 50 ms until it holds or `limit` passes; returns its last answer.
bool eventually(const std::function<bool()>& condition, std::chrono::seconds limit = std::chrono::seconds{30});

// One libpq connection for test setup and inspection.
class Sql {
 public:
  explicit Sql(const std::string& conninfo);
  ~Sql();
  Sql(const Sql&) = delete;
  Sql& operator=(const Sql&) = delete;

  std::vector<Row> rows(const std::string& sql, const Params& params = {});
  void exec(const std::string& sql, const Params& params = {}) { rows(sql, params); }
  // The first column of the first row (nullopt for NULL or no row).
  std::optional<std::string> value(const std::string& sql, const Params& params = {});

 private:
  pg_conn* conn_;
};

// How many statements of this test database wait for a lock.
int waitingOnLocks(Sql& sql);

// A database created now and dropped (WITH (FORCE)) on destruction, on the server of
// STREAMLOCK_TEST_DATABASE_URL.
class ScratchDatabase {
 public:
  ScratchDatabase();
  ~ScratchDatabase();
  ScratchDatabase(const ScratchDatabase&) = delete;
  ScratchDatabase& operator=(const ScratchDatabase&) = delete;
  const std::string& name() const { return name_; }
  const std::string& conninfo() const { return conninfo_; }
  // A conninfo of the same server for another user.
  std::string conninfoAs(const std::string& user, const std::string& password) const;

 private:
  std::string name_;
  std::string conninfo_;
};

// A database of its own for this test process (srv_<random>, from STREAMLOCK_TEST_DATABASE_URL),
// created on first use and dropped when the process exits.
class TestDatabase {
 public:
  static TestDatabase& get();
  const std::string& conninfo() const { return conninfo_; }
  const std::string& name() const { return name_; }
  Sql& sql() { return *sql_; }

 private:
  TestDatabase();
  ScratchDatabase database_;
  std::string name_;
  std::string conninfo_;
  std::unique_ptr<Sql> sql_;
};

// Seeding: users, workspaces, keys and chats with unique ids in the test database.
class Seed {
 public:
  explicit Seed(Sql& sql) : sql_(sql) {}
  std::string user();                              // a new user's id
  std::string workspace(bool archived = false);    // a new workspace's id
  void member(const std::string& workspaceId, const std::string& userId);
  std::string token(const std::string& userId);    // a new valid bearer token
  void revoke(const std::string& token);
  // A new chat (type mothership unless given); returns its UUID.
  std::string chat(const std::string& userId, const std::optional<std::string>& workspaceId,
                   const std::string& title = "chat", const std::string& type = "mothership");
  void setMarker(const std::string& chatId, const std::optional<std::string>& marker);
  std::optional<std::string> marker(const std::string& chatId);

 private:
  Sql& sql_;
};

// A user with a token and a workspace they are a member of.
struct Caller {
  std::string userId;
  std::string token;
  std::string workspaceId;
};
Caller newCaller(Seed& seed);

// Starts argv (argv[0] a path) with stdin from /dev/null, stdout and stderr on the given
// descriptors, and no other descriptor of this process: the test's own sockets (Redis, PostgreSQL,
// HTTP) never leak into a child. envp null: this process's environment. Throws on failure.
pid_t spawnProcess(const std::vector<std::string>& argv, int stdoutFd, int stderrFd, char* const* envp = nullptr);

// A child process with its stdout on a pipe and its stderr in a file.
class Subprocess {
 public:
  Subprocess(const std::vector<std::string>& argv, const std::map<std::string, std::optional<std::string>>& env = {});
  ~Subprocess();  // SIGKILL if still running
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // The next stdout line, waiting up to `limit`; nullopt at EOF or timeout.
  std::optional<std::string> readLine(std::chrono::milliseconds limit);
  // All of stdout until EOF (waits up to `limit`).
  std::string readAll(std::chrono::milliseconds limit);
  std::string stderrText() const;
  void signal(int signal);
  // Waits for exit up to `limit`; the exit code, 128+signal, or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds limit);
  bool running();

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
  std::string buffer_;
  std::string stderrPath_;
  std::optional<int> status_;
};

struct Response {
  int status = 0;  // 0: no answer
  std::string body;
  httplib::Headers headers;
  Json json() const;
};

// mothership_server as a child process on a free port (--listen 127.0.0.1:0).
class Server {
 public:
  // Flags after --listen and --database-url; the test database unless databaseUrl is given. env:
  // variables to set (or, nullopt, to unset) in the server's environment.
  explicit Server(std::vector<std::string> flags = {}, std::optional<std::string> databaseUrl = {},
                  const std::map<std::string, std::optional<std::string>>& env = {});
  ~Server();

  int port() const { return port_; }
  const std::vector<std::string>& startupLines() const { return startupLines_; }
  Subprocess& process() { return *process_; }

  Response get(const std::string& path, const std::optional<std::string>& token = {},
               const httplib::Headers& extra = {}) const;
  Response request(const std::string& method, const std::string& path, const std::string& body = {}) const;

 private:
  std::unique_ptr<Subprocess> process_;
  int port_ = 0;
  std::vector<std::string> startupLines_;
};

// Flags for the shared test Redis (STREAMLOCK_TEST_REDIS_URL).
std::vector<std::string> sharedRedisFlags();

// Lock keys in a Redis server.
// Runs one Redis command in argv form. Throws on an I/O error or an error reply; the caller frees
// the reply with freeReplyObject.
redisReply* runRedis(redisContext* context, const std::vector<std::string>& args);

class Redis {
 public:
  explicit Redis(const std::string& url);
  ~Redis();
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;
  void setLock(const std::string& chatId, const std::string& owner, int ttlSeconds = 60);
  std::optional<std::string> lockOwner(const std::string& chatId);
  void deleteLock(const std::string& chatId);
  // Many locks (chatId, owner) or deletions in one pipeline: one round trip however many.
  void setLocks(const std::vector<std::pair<std::string, std::string>>& locks, int ttlSeconds = 60);
  void deleteLocks(const std::vector<std::string>& chatIds);
  // The text of INFO <section>, e.g. "commandstats".
  std::string info(const std::string& section);

 private:
  redisContext* context_;
};

// A redis-server of this test's own (STREAMLOCK_TEST_REDIS_SERVER) on a free port.
class PrivateRedis {
 public:
  PrivateRedis();
  ~PrivateRedis();
  std::string url() const;
  void kill();

 private:
  std::unique_ptr<Subprocess> process_;
  int port_ = 0;
};

std::string lockKey(const std::string& chatId);
int freePort();
std::string chatListPath(const std::string& workspaceId, const std::string& scope = {});
std::string serverBinary();
std::string workerBinary();
// examples/event_loop_stream.
std::string eventLoopStreamBinary();

}  // namespace servertest
