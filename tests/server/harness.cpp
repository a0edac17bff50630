#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>

extern char** environ;

namespace servertest {
namespace {

std::string randomHex(std::size_t bytes) {
  static std::mt19937_64 generator{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto value = generator();
    out += digits[value & 0xfu];
    out += digits[(value >> 4) & 0xfu];
  }
  return out;
}

std::string quoteConninfo(const std::string& value) {
  std::string out = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

std::string requireEnv(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    throw std::runtime_error(std::string(name) + " is not set: run the tests through tests/run.sh");
  }
  return value;
}

int waitingOnLocks(Sql& sql) {
  return std::stoi(*sql.value(
      "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"));
}

bool eventually(const std::function<bool()>& condition, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
}

// ---- Sql ----

Sql::Sql(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string message = PQerrorMessage(conn_);
    PQfinish(conn_);
    throw std::runtime_error("test connection to PostgreSQL failed: " + message);
  }
  PQclear(PQexec(conn_, "SET client_min_messages = warning"));
}

Sql::~Sql() { PQfinish(conn_); }

std::vector<Row> Sql::rows(const std::string& sql, const Params& params) {
  // A connection broken by a server restart is reset once.
  if (PQstatus(conn_) != CONNECTION_OK) PQreset(conn_);
  std::vector<const char*> values;
  for (const auto& param : params) values.push_back(param ? param->c_str() : nullptr);
  PGresult* result = params.empty()
                         ? PQexec(conn_, sql.c_str())
                         : PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                        nullptr, nullptr, 0);
  const auto status = PQresultStatus(result);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    const std::string message = PQerrorMessage(conn_);
    PQclear(result);
    throw std::runtime_error("SQL failed: " + message + " in: " + sql);
  }
  std::vector<Row> out;
  for (int r = 0; r < PQntuples(result); ++r) {
    Row row;
    for (int c = 0; c < PQnfields(result); ++c) {
      row.push_back(PQgetisnull(result, r, c) != 0 ? std::nullopt
                                                   : std::optional<std::string>(PQgetvalue(result, r, c)));
    }
    out.push_back(std::move(row));
  }
  PQclear(result);
  return out;
}

std::optional<std::string> Sql::value(const std::string& sql, const Params& params) {
  const auto result = rows(sql, params);
  if (result.empty() || result.front().empty()) return std::nullopt;
  return result.front().front();
}

// ---- databases ----

namespace {

// The conninfo of STREAMLOCK_TEST_DATABASE_URL with another database (and user).
std::string deriveConninfo(const std::string& database, const std::string& user = {},
                           const std::string& password = {}) {
  const auto admin = requireEnv("STREAMLOCK_TEST_DATABASE_URL");
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(admin.c_str(), &error);
  if (options == nullptr) {
    const std::string message = error != nullptr ? error : "unparsable";
    PQfreemem(error);
    throw std::runtime_error("STREAMLOCK_TEST_DATABASE_URL: " + message);
  }
  std::string out;
  for (auto* option = options; option->keyword != nullptr; ++option) {
    const std::string keyword = option->keyword;
    std::optional<std::string> value;
    if (option->val != nullptr) value = option->val;
    if (keyword == "dbname") value = database;
    if (keyword == "user" && !user.empty()) value = user;
    if (keyword == "password" && !user.empty()) value = password;
    if (value) out += keyword + "=" + quoteConninfo(*value) + " ";
  }
  PQconninfoFree(options);
  return out;
}

}  // namespace

ScratchDatabase::ScratchDatabase() : name_("srv_" + randomHex(6)) {
  Sql admin(requireEnv("STREAMLOCK_TEST_DATABASE_URL"));
  admin.exec("CREATE DATABASE " + name_);
  conninfo_ = deriveConninfo(name_);
}

ScratchDatabase::~ScratchDatabase() {
  try {
    Sql admin(requireEnv("STREAMLOCK_TEST_DATABASE_URL"));
    admin.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "warning: could not drop %s: %s\n", name_.c_str(), error.what());
  }
}

std::string ScratchDatabase::conninfoAs(const std::string& user, const std::string& password) const {
  return deriveConninfo(name_, user, password);
}

TestDatabase& TestDatabase::get() {
  static TestDatabase database;
  return database;
}

TestDatabase::TestDatabase()
    : name_(database_.name()), conninfo_(database_.conninfo()), sql_(std::make_unique<Sql>(conninfo_)) {}

// ---- Seed ----

std::string Seed::user() {
  const auto id = "user-" + randomHex(6);
  sql_.exec("INSERT INTO users (id, email, name) VALUES ($1, $1 || '@test.invalid', 'Test user')", {id});
  return id;
}

std::string Seed::workspace(bool archived) {
  const auto id = "ws-" + randomHex(6);
  sql_.exec("INSERT INTO workspaces (id, name, archived_at) VALUES ($1, 'Test workspace', "
            "CASE WHEN $2 THEN now() END)",
            {id, archived ? "true" : "false"});
  return id;
}

void Seed::member(const std::string& workspaceId, const std::string& userId) {
  sql_.exec("INSERT INTO workspace_members (workspace_id, user_id) VALUES ($1, $2)", {workspaceId, userId});
}

std::string Seed::token(const std::string& userId) {
  const auto token = "tok_" + randomHex(16);
  sql_.exec("INSERT INTO api_keys (token_sha256, user_id) VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2)",
            {token, userId});
  return token;
}

void Seed::revoke(const std::string& token) {
  sql_.exec("UPDATE api_keys SET revoked_at = now() WHERE token_sha256 = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
            {token});
}

std::string Seed::chat(const std::string& userId, const std::optional<std::string>& workspaceId,
                       const std::string& title, const std::string& type) {
  return *sql_.value("INSERT INTO copilot_chats (user_id, workspace_id, title, type) VALUES ($1, $2, $3, $4) "
                     "RETURNING id::text",
                     {userId, workspaceId, title, type});
}

void Seed::setMarker(const std::string& chatId, const std::optional<std::string>& marker) {
  sql_.exec("UPDATE copilot_chats SET conversation_id = $2 WHERE id = $1::uuid", {chatId, marker});
}

std::optional<std::string> Seed::marker(const std::string& chatId) {
  return sql_.value("SELECT conversation_id FROM copilot_chats WHERE id = $1::uuid", {chatId});
}

Caller newCaller(Seed& seed) {
  Caller caller;
  caller.userId = seed.user();
  caller.token = seed.token(caller.userId);
  caller.workspaceId = seed.workspace();
  seed.member(caller.workspaceId, caller.userId);
  return caller;
}

// ---- Subprocess ----

pid_t spawnProcess(const std::vector<std::string>& argv, int stdoutFd, int stderrFd, char* const* envp) {
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (auto& arg : args) argp.push_back(arg.data());
  argp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, stdoutFd, 1);
  posix_spawn_file_actions_adddup2(&actions, stderrFd, 2);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, argp[0], &actions, nullptr, argp.data(), envp != nullptr ? envp : environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("cannot start " + argv.front() + ": " + std::strerror(error));
  return pid;
}

Subprocess::Subprocess(const std::vector<std::string>& argv,
                       const std::map<std::string, std::optional<std::string>>& env) {
  char stderrTemplate[] = "/tmp/mothership-test-stderr-XXXXXX";
  const int stderrFd = mkstemp(stderrTemplate);
  if (stderrFd < 0) throw std::runtime_error("mkstemp failed");
  stderrPath_ = stderrTemplate;
  int pipeFds[2];
  if (pipe2(pipeFds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");

  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string variable = *entry;
    const auto name = variable.substr(0, variable.find('='));
    if (env.count(name) == 0) environment.push_back(variable);
  }
  for (const auto& [name, value] : env) {
    if (value) environment.push_back(name + "=" + *value);
  }
  std::vector<char*> envp;
  for (auto& variable : environment) envp.push_back(variable.data());
  envp.push_back(nullptr);

  try {
    pid_ = spawnProcess(argv, pipeFds[1], stderrFd, envp.data());
  } catch (...) {
    close(pipeFds[0]);
    close(pipeFds[1]);
    close(stderrFd);
    throw;
  }
  close(pipeFds[1]);
  close(stderrFd);
  stdout_ = pipeFds[0];
}

Subprocess::~Subprocess() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds{10});
  }
  close(stdout_);
  std::remove(stderrPath_.c_str());
}

std::optional<std::string> Subprocess::readLine(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (const auto newline = buffer_.find('\n'); newline != std::string::npos) {
      auto line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd fd{stdout_, POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    const auto n = read(stdout_, chunk, sizeof chunk);
    if (n <= 0) {
      if (buffer_.empty()) return std::nullopt;
      auto line = std::move(buffer_);
      buffer_.clear();
      return line;
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::string Subprocess::readAll(std::chrono::milliseconds limit) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    const auto line = readLine(left);
    if (!line) break;
    out += *line + "\n";
  }
  return out;
}

std::string Subprocess::stderrText() const {
  std::ifstream file(stderrPath_);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

void Subprocess::signal(int signal) {
  if (running()) ::kill(pid_, signal);
}

std::optional<int> Subprocess::wait(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!status_) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (done < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return status_;
}

bool Subprocess::running() { return pid_ > 0 && !wait(std::chrono::milliseconds{0}); }

// ---- Server ----

Json Response::json() const { return Json::parse(body); }

Server::Server(std::vector<std::string> flags, std::optional<std::string> databaseUrl,
               const std::map<std::string, std::optional<std::string>>& env) {
  std::vector<std::string> argv{serverBinary(), "--listen", "127.0.0.1:0", "--database-url",
                                databaseUrl ? *databaseUrl : TestDatabase::get().conninfo()};
  argv.insert(argv.end(), flags.begin(), flags.end());
  std::map<std::string, std::optional<std::string>> environment{{"DATABASE_URL", std::nullopt},
                                                                {"REDIS_URL", std::nullopt}};
  for (const auto& [name, value] : env) environment[name] = value;
  process_ = std::make_unique<Subprocess>(argv, environment);
  constexpr std::string_view kListening = "listening on http://127.0.0.1:";
  for (;;) {
    const auto line = process_->readLine(std::chrono::seconds{30});
    if (!line) throw std::runtime_error("mothership_server did not start:\n" + process_->stderrText());
    if (line->rfind(kListening, 0) == 0) {
      port_ = std::stoi(line->substr(kListening.size()));
      break;
    }
    startupLines_.push_back(*line);
  }
}

Server::~Server() {
  process_->signal(SIGTERM);
  const auto exitCode = process_->wait(std::chrono::seconds{15});
  if (exitCode == std::optional<int>(0)) return;
  // A server that does not stop cleanly on SIGTERM (or that a sanitizer stopped) fails the test
  // here, unless the test is already failing.
  std::fprintf(stderr, "mothership_server exited with %s; its stderr:\n%s\n",
               exitCode ? std::to_string(*exitCode).c_str() : "no exit (killed)", process_->stderrText().c_str());
  if (std::uncaught_exceptions() == 0) std::abort();
}

namespace {
httplib::Client makeClient(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(30, 0);
  return client;
}

Response toResponse(const httplib::Result& result) {
  Response response;
  if (result) {
    response.status = result->status;
    response.body = result->body;
    response.headers = result->headers;
  }
  return response;
}
}  // namespace

Response Server::get(const std::string& path, const std::optional<std::string>& token,
                     const httplib::Headers& extra) const {
  auto client = makeClient(port_);
  httplib::Headers headers = extra;
  if (token) headers.emplace("Authorization", "Bearer " + *token);
  return toResponse(client.Get(path.c_str(), headers));
}

Response Server::request(const std::string& method, const std::string& path, const std::string& body) const {
  auto client = makeClient(port_);
  httplib::Request request;
  request.method = method;
  request.path = path;
  request.body = body;
  if (!body.empty()) request.set_header("Content-Type", "text/plain");
  return toResponse(client.send(request));
}

std::vector<std::string> sharedRedisFlags() { return {"--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")}; }

// ---- Redis ----

Redis::Redis(const std::string& url) : context_(nullptr) {
  // redis://[user:password@]host[:port][/db]
  std::string rest = url.substr(url.find("://") == std::string::npos ? 0 : url.find("://") + 3);
  std::string password;
  if (const auto at = rest.rfind('@'); at != std::string::npos) {
    const auto userinfo = rest.substr(0, at);
    password = userinfo.substr(userinfo.find(':') == std::string::npos ? userinfo.size() : userinfo.find(':') + 1);
    rest = rest.substr(at + 1);
  }
  std::string database;
  if (const auto slash = rest.find('/'); slash != std::string::npos) {
    database = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
  }
  int port = 6379;
  if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    port = std::stoi(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
  }
  const timeval timeout{5, 0};
  context_ = redisConnectWithTimeout(rest.c_str(), port, timeout);
  if (context_ == nullptr || context_->err != 0) {
    const std::string message = context_ != nullptr ? context_->errstr : "out of memory";
    if (context_ != nullptr) redisFree(context_);
    throw std::runtime_error("test connection to Redis failed: " + message);
  }
  redisSetTimeout(context_, timeout);
  if (!password.empty()) freeReplyObject(runRedis(context_, {"AUTH", password}));
  if (!database.empty() && database != "0") freeReplyObject(runRedis(context_, {"SELECT", database}));
}

Redis::~Redis() {
  if (context_ != nullptr) redisFree(context_);
}

std::string lockKey(const std::string& chatId) { return "copilot:chat-stream-lock:" + chatId; }

void Redis::setLock(const std::string& chatId, const std::string& owner, int ttlSeconds) {
  freeReplyObject(runRedis(context_, {"SET", lockKey(chatId), owner, "EX", std::to_string(ttlSeconds)}));
}

std::optional<std::string> Redis::lockOwner(const std::string& chatId) {
  auto* reply = runRedis(context_, {"GET", lockKey(chatId)});
  std::optional<std::string> owner;
  if (reply->type == REDIS_REPLY_STRING) owner = std::string(reply->str, reply->len);
  freeReplyObject(reply);
  return owner;
}

void Redis::deleteLock(const std::string& chatId) { freeReplyObject(runRedis(context_, {"DEL", lockKey(chatId)})); }

namespace {
// The argv arrays hiredis takes, pointing into args.
struct Argv {
  explicit Argv(const std::vector<std::string>& args) {
    for (const auto& arg : args) {
      pointers.push_back(arg.data());
      lengths.push_back(arg.size());
    }
  }
  int count() const { return static_cast<int>(pointers.size()); }
  std::vector<const char*> pointers;
  std::vector<size_t> lengths;
};

// Sends every command before reading any reply: one round trip for the whole batch.
void pipeline(redisContext* context, const std::vector<std::vector<std::string>>& commands) {
  for (const auto& args : commands) {
    Argv argv(args);
    if (redisAppendCommandArgv(context, argv.count(), argv.pointers.data(), argv.lengths.data()) != REDIS_OK) {
      throw std::runtime_error("Redis pipeline append failed");
    }
  }
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(context, &raw) != REDIS_OK || raw == nullptr) throw std::runtime_error("Redis pipeline failed");
    auto* reply = static_cast<redisReply*>(raw);
    const bool error = reply->type == REDIS_REPLY_ERROR;
    freeReplyObject(reply);
    if (error) throw std::runtime_error("Redis pipeline command failed");
  }
}
}  // namespace

void Redis::setLocks(const std::vector<std::pair<std::string, std::string>>& locks, int ttlSeconds) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(locks.size());
  for (const auto& [chatId, owner] : locks) {
    commands.push_back({"SET", lockKey(chatId), owner, "EX", std::to_string(ttlSeconds)});
  }
  pipeline(context_, commands);
}

void Redis::deleteLocks(const std::vector<std::string>& chatIds) {
  std::vector<std::vector<std::string>> commands;
  commands.reserve(chatIds.size());
  for (const auto& chatId : chatIds) commands.push_back({"DEL", lockKey(chatId)});
  pipeline(context_, commands);
}

redisReply* runRedis(redisContext* context, const std::vector<std::string>& args) {
  Argv argv(args);
  auto* reply = static_cast<redisReply*>(
      redisCommandArgv(context, argv.count(), argv.pointers.data(), argv.lengths.data()));
  if (reply == nullptr || reply->type == REDIS_REPLY_ERROR) {
    const std::string message = reply != nullptr ? std::string(reply->str, reply->len) : context->errstr;
    if (reply != nullptr) freeReplyObject(reply);
    throw std::runtime_error("Redis " + args.front() + " failed: " + message);
  }
  return reply;
}

std::string Redis::info(const std::string& section) {
  auto* reply = runRedis(context_, {"INFO", section});
  std::string text;
  if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) text.assign(reply->str, reply->len);
  freeReplyObject(reply);
  return text;
}

// ---- PrivateRedis ----

PrivateRedis::PrivateRedis() {
  const auto binary = requireEnv("STREAMLOCK_TEST_REDIS_SERVER");
  for (int attempt = 0; attempt < 5 && !process_; ++attempt) {
    port_ = freePort();
    auto process = std::make_unique<Subprocess>(std::vector<std::string>{
        binary, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"});
    const bool up = eventually(
        [&] {
          if (!process->running()) return true;
          try {
            Redis probe(url());
            return true;
          } catch (const std::exception&) {
            return false;
          }
        },
        std::chrono::seconds{15});
    if (up && process->running()) process_ = std::move(process);  // else: the port was taken; retry
  }
  if (!process_) throw std::runtime_error("cannot start a private redis-server");
}

PrivateRedis::~PrivateRedis() { kill(); }

std::string PrivateRedis::url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

void PrivateRedis::kill() {
  if (process_) {
    process_->signal(SIGKILL);
    process_->wait(std::chrono::seconds{10});
  }
}

// ---- misc ----

int freePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) close(fd);
    throw std::runtime_error("cannot find a free port");
  }
  close(fd);
  return ntohs(address.sin_port);
}

std::string chatListPath(const std::string& workspaceId, const std::string& scope) {
  auto path = "/api/mothership/chats?workspaceId=" + workspaceId;
  if (!scope.empty()) path += "&scope=" + scope;
  return path;
}

std::string serverBinary() { return MOTHERSHIP_SERVER_PATH; }
std::string workerBinary() { return STREAM_WORKER_PATH; }

std::string eventLoopStreamBinary() { return EVENT_LOOP_STREAM_PATH; }

}  // namespace servertest
