#include "streamlock/postgres.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>
#include <cstdlib>
#include <unordered_map>
#include <utility>

#include "io.h"
#include "pool.h"
#include "redis/url.h"
#include "streamlock/error.h"

namespace streamlock {

void detail::PgResultDeleter::operator()(pg_result* result) const noexcept { PQclear(result); }

PgResult::PgResult(pg_result* result) : result_(result) {}

int PgResult::rows() const noexcept { return result_ ? PQntuples(result_.get()) : 0; }
int PgResult::columns() const noexcept { return result_ ? PQnfields(result_.get()) : 0; }

int PgResult::column(std::string_view name) const noexcept {
  for (int i = 0; i < columns(); ++i) {
    if (name == PQfname(result_.get(), i)) return i;
  }
  return -1;
}

bool PgResult::isNull(int row, int column) const noexcept {
  return !result_ || PQgetisnull(result_.get(), row, column) != 0;
}

std::string_view PgResult::value(int row, int column) const noexcept {
  if (!result_) return {};
  // libpq gives "" (length 0) for NULL, and nullptr for a row or column out of range.
  const char* text = PQgetvalue(result_.get(), row, column);
  if (text == nullptr) return {};
  return {text, static_cast<std::size_t>(PQgetlength(result_.get(), row, column))};
}

std::optional<std::string> PgResult::optional(int row, int column) const {
  if (isNull(row, column)) return std::nullopt;
  return std::string(value(row, column));
}

std::uint64_t PgResult::affectedRows() const noexcept {
  if (!result_) return 0;
  return std::strtoull(PQcmdTuples(result_.get()), nullptr, 10);
}

namespace detail {
namespace {

struct ConnDeleter {
  void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;

struct ConninfoDeleter {
  void operator()(PQconninfoOption* options) const noexcept { PQconninfoFree(options); }
};

// libpq's messages end with a newline and may span lines; logs want one line.
std::string oneLine(const char* message) {
  std::string out = message ? message : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (char& c : out) {
    if (c == '\n') c = ' ';
  }
  return out;
}

// Parses the conninfo (string or URI) and returns its keywords; throws on a malformed one
// without echoing it (it may hold a password).
std::vector<std::pair<std::string, std::string>> parseConninfo(const std::string& conninfo) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> parsed(PQconninfoParse(conninfo.c_str(), &error));
  if (!parsed) {
    std::string why = error ? oneLine(error) : "out of memory";
    PQfreemem(error);
    // libpq may quote part of the string; never echo what could be a password.
    if (why.find("password") != std::string::npos) why = "malformed";
    std::string shown = conninfo.find("://") != std::string::npos ? " " + redactUrl(conninfo) : "";
    throw Error(ErrorCode::InvalidArgument, "invalid PostgreSQL connection string" + shown + " (" + why + ")");
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (PQconninfoOption* o = parsed.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out.emplace_back(o->keyword, o->val);
  }
  return out;
}

// "-c name=value" with the backslash-escaping libpq's options keyword expects for spaces.
std::string settingArgument(const std::string& name, const std::string& value) {
  std::string out = "-c " + name + "=";
  for (char c : value) {
    if (c == ' ' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

class PgConnection {
 public:
  static std::unique_ptr<PgConnection> open(const std::vector<std::pair<std::string, std::string>>& keywords,
                                            Deadline deadline) {
    std::vector<const char*> keys;
    std::vector<const char*> values;
    for (const auto& [key, value] : keywords) {
      keys.push_back(key.c_str());
      values.push_back(value.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    ConnPtr conn(PQconnectStartParams(keys.data(), values.data(), 0));
    if (!conn) throw Error(ErrorCode::ConnectFailed, "cannot connect to PostgreSQL: out of memory");
    if (PQstatus(conn.get()) == CONNECTION_BAD) {
      throw Error(ErrorCode::ConnectFailed, "cannot connect to PostgreSQL: " + oneLine(PQerrorMessage(conn.get())));
    }
    PostgresPollingStatusType status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK) {
      if (status == PGRES_POLLING_FAILED) {
        throw Error(ErrorCode::ConnectFailed, "cannot connect to PostgreSQL: " + oneLine(PQerrorMessage(conn.get())));
      }
      short events = status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      if (!waitForFd(PQsocket(conn.get()), events, deadline)) {
        throw Error(ErrorCode::Timeout, "connecting to PostgreSQL timed out");
      }
      status = PQconnectPoll(conn.get());
    }
    // Server notices (e.g. "table does not exist, skipping") are not errors; keep them off stderr.
    PQsetNoticeProcessor(conn.get(), [](void*, const char*) {}, nullptr);
    if (PQsetnonblocking(conn.get(), 1) != 0) {
      throw Error(ErrorCode::ConnectFailed, "cannot make the PostgreSQL connection non-blocking");
    }
    return std::unique_ptr<PgConnection>(new PgConnection(std::move(conn)));
  }

  bool broken() const noexcept { return broken_ || PQstatus(conn_.get()) != CONNECTION_OK; }
  bool deadWhileIdle() const noexcept { return broken() || idleSocketIsDead(PQsocket(conn_.get())); }
  PGconn* raw() const noexcept { return conn_.get(); }

  PgResult execute(std::string_view sql, const PgParams& params, Deadline deadline, bool prepare) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    int count = static_cast<int>(params.size());
    std::string text(sql);

    if (!prepare) {
      if (!PQsendQueryParams(conn_.get(), text.c_str(), count, nullptr, values.data(), nullptr, nullptr, 0)) {
        fail(ErrorCode::ConnectionLost);
      }
      return finish(deadline);
    }
    auto it = prepared_.find(text);
    if (it == prepared_.end()) {
      std::string name = "streamlock_" + std::to_string(prepared_.size() + 1);
      if (!PQsendPrepare(conn_.get(), name.c_str(), text.c_str(), count, nullptr)) fail(ErrorCode::ConnectionLost);
      finish(deadline);  // throws on a SQL error: nothing is cached then
      it = prepared_.emplace(std::move(text), std::move(name)).first;
    }
    if (!PQsendQueryPrepared(conn_.get(), it->second.c_str(), count, values.data(), nullptr, nullptr, 0)) {
      fail(ErrorCode::ConnectionLost);
    }
    return finish(deadline);
  }

 private:
  explicit PgConnection(ConnPtr conn) : conn_(std::move(conn)) {}

  [[noreturn]] void fail(ErrorCode code) {
    broken_ = true;
    if (code == ErrorCode::Timeout) throw Error(code, "PostgreSQL statement timed out");
    throw Error(code, "PostgreSQL connection failed: " + oneLine(PQerrorMessage(conn_.get())));
  }

  // Flushes the request and collects its results before the deadline.
  PgResult finish(Deadline deadline) {
    PGconn* conn = conn_.get();
    for (;;) {
      int flushed = PQflush(conn);
      if (flushed == 0) break;
      if (flushed < 0) fail(ErrorCode::ConnectionLost);
      if (!waitForFd(PQsocket(conn), POLLOUT | POLLIN, deadline)) fail(ErrorCode::Timeout);
      if (!PQconsumeInput(conn)) fail(ErrorCode::ConnectionLost);
    }
    PgResult first;
    std::optional<Error> error;
    bool any = false;
    for (;;) {
      while (PQisBusy(conn)) {
        if (!waitForFd(PQsocket(conn), POLLIN, deadline)) fail(ErrorCode::Timeout);
        if (!PQconsumeInput(conn)) fail(ErrorCode::ConnectionLost);
      }
      PGresult* raw = PQgetResult(conn);
      if (raw == nullptr) break;
      PgResult result(raw);
      ExecStatusType status = PQresultStatus(raw);
      if (status == PGRES_FATAL_ERROR && !error) {
        const char* state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
        const char* primary = PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY);
        error.emplace(ErrorCode::ServerError, std::string("PostgreSQL error: ") + (primary ? primary : "unknown"),
                      state ? state : "");
      } else if (!any) {
        first = std::move(result);
        any = true;
      }
    }
    if (PQstatus(conn) != CONNECTION_OK) broken_ = true;
    if (error) {
      if (broken_) throw Error(ErrorCode::ConnectionLost, error->what(), error->sqlstate());
      throw *error;
    }
    if (!any) fail(ErrorCode::ConnectionLost);
    return first;
  }

  ConnPtr conn_;
  bool broken_ = false;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
};

}  // namespace

class PgPoolState {
 public:
  PgPoolState(PostgresOptions options, Logger logger)
      : options_(std::move(options)),
        logger_(std::move(logger)),
        keywords_(connectKeywords(options_)),
        pool_(options_.poolSize, "PostgreSQL", [this](Deadline) {
          return PgConnection::open(keywords_, deadlineIn(options_.connectTimeout));
        }) {}

  PgResult execute(std::string_view sql, const PgParams& params, Milliseconds timeout) {
    for (int attempt = 0;; ++attempt) {
      // Retried below when a reused connection turns out lost, so the idle check may be skipped.
      auto lease = pool_.acquire(deadlineIn(options_.acquireTimeout), Pool<PgConnection>::IdleCheck::SkipRecent);
      try {
        return lease->execute(sql, params, deadlineIn(timeout), options_.prepareStatements);
      } catch (const Error& e) {
        // A pooled connection that died while idle in a way the idle check missed fails on its
        // first use; send once more on a fresh connection.
        if (e.code() == ErrorCode::ConnectionLost && lease.reused() && attempt == 0) {
          pool_.dropIdle();
          continue;
        }
        if (e.code() == ErrorCode::Timeout) cancelInBackground(lease->raw());
        throw;
      }
    }
  }

  Milliseconds statementTimeout() const noexcept { return options_.statementTimeout; }

  // The connection of a timed-out statement is dropped, but the server would run the statement
  // on until it next writes to the socket: ask it to cancel. PQcancel blocks until the server
  // has processed the request (for ever, if it hangs), so it runs on a thread of its own, and
  // only a few at a time.
  void cancelInBackground(PGconn* conn) noexcept {
    constexpr int kMaxCancels = 4;
    if (cancelsInFlight_->fetch_add(1) >= kMaxCancels) {
      --*cancelsInFlight_;
      return;
    }
    PGcancel* cancel = PQgetCancel(conn);
    if (cancel == nullptr) {
      --*cancelsInFlight_;
      return;
    }
    try {
      std::thread([cancel, inFlight = cancelsInFlight_] {
        char error[256];
        PQcancel(cancel, error, sizeof error);
        PQfreeCancel(cancel);
        --*inFlight;
      }).detach();
    } catch (const std::system_error&) {
      PQfreeCancel(cancel);
      --*cancelsInFlight_;
    }
  }
  void close() noexcept { pool_.close(); }
  PgPool::Stats stats() const {
    auto s = pool_.stats();
    return {s.open, s.idle};
  }

 private:
  // The conninfo's keywords plus the session settings, without libpq's whole-second
  // connect_timeout (the pool enforces its own deadline).
  static std::vector<std::pair<std::string, std::string>> connectKeywords(const PostgresOptions& options) {
    auto keywords = parseConninfo(options.conninfo);
    std::string settings;
    for (const auto& [key, value] : keywords) {
      if (key == "options") settings = value;
    }
    for (const auto& [name, value] : options.settings) {
      if (!settings.empty()) settings += ' ';
      settings += settingArgument(name, value);
    }
    keywords.erase(std::remove_if(keywords.begin(), keywords.end(),
                                  [](const auto& kv) { return kv.first == "connect_timeout" || kv.first == "options"; }),
                   keywords.end());
    if (!settings.empty()) keywords.emplace_back("options", settings);
    return keywords;
  }

  PostgresOptions options_;
  Logger logger_;
  std::vector<std::pair<std::string, std::string>> keywords_;
  Pool<PgConnection> pool_;
  std::shared_ptr<std::atomic<int>> cancelsInFlight_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace detail

PgPool::PgPool(PostgresOptions options, Logger logger)
    : state_(std::make_unique<detail::PgPoolState>(std::move(options), std::move(logger))) {}

PgPool::~PgPool() { state_->close(); }

PgResult PgPool::execute(std::string_view sql, const PgParams& params, std::optional<Milliseconds> timeout) {
  // libpq takes text parameters as C strings: a NUL would silently cut the value.
  for (const auto& p : params) {
    if (p && p->find('\0') != std::string::npos) {
      throw Error(ErrorCode::InvalidArgument, "a statement parameter contains a NUL byte");
    }
  }
  return state_->execute(sql, params, timeout.value_or(state_->statementTimeout()));
}

void PgPool::close() noexcept { state_->close(); }

PgPool::Stats PgPool::stats() const { return state_->stats(); }

}  // namespace streamlock
