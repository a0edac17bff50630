#include "pg/connection.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "redis/url.h"

namespace streamlock::detail {

std::string pgOneLine(const char* message) {
  std::string out = message ? message : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (char& c : out) {
    if (c == '\n') c = ' ';
  }
  return out;
}

namespace {

struct ConninfoDeleter {
  void operator()(PQconninfoOption* options) const noexcept { PQconninfoFree(options); }
};

// The conninfo's keywords (string or URI); throws on a malformed one without echoing it (it may
// hold a password).
PgTargets::Keywords parseConninfo(const std::string& conninfo) {
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> parsed(PQconninfoParse(conninfo.c_str(), &error));
  if (!parsed) {
    std::string why = error ? pgOneLine(error) : "out of memory";
    PQfreemem(error);
    // libpq may quote part of the string (a keyword, a value, a URI token such as a password
    // with a bad percent-escape); never echo what could be a password.
    if (why.find("password") != std::string::npos) why = "malformed";
    for (std::string::size_type open = why.find('"'); open != std::string::npos; open = why.find('"', open + 5)) {
      const auto close = why.find('"', open + 1);
      if (close == std::string::npos) break;
      why.replace(open, close - open + 1, "\"...\"");
    }
    // A URI without its password (user:password@) and without its query string, which may hold
    // one (?password=...).
    std::string shown;
    if (conninfo.find("://") != std::string::npos) {
      std::string redacted = redactUrl(conninfo);
      const auto query = redacted.find('?', redacted.find("://"));
      if (query != std::string::npos) redacted.replace(query, std::string::npos, "?...");
      shown = " " + redacted;
    }
    throw Error(ErrorCode::InvalidArgument, "invalid PostgreSQL connection string" + shown + " (" + why + ")");
  }
  PgTargets::Keywords out;
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

// libpq's host, hostaddr and port lists: comma-separated, an empty element meaning the default.
std::vector<std::string> splitList(const std::string& value) {
  std::vector<std::string> out;
  std::string::size_type start = 0;
  for (;;) {
    const auto comma = value.find(',', start);
    out.push_back(value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

void ignoreNotice(void*, const char*) {}

bool passed(Deadline deadline) { return Clock::now() >= deadline; }

}  // namespace

PgTargets::PgTargets(const PostgresOptions& options, std::shared_ptr<Demotions> shared) {
  Keywords common;
  std::optional<std::vector<std::string>> hosts, addresses, ports;
  std::string settings;
  for (auto& [key, value] : parseConninfo(options.conninfo)) {
    if (key == "host") {
      hosts = splitList(value);
    } else if (key == "hostaddr") {
      addresses = splitList(value);
    } else if (key == "port") {
      ports = splitList(value);
    } else if (key == "options") {
      settings = value;
    } else if (key != "connect_timeout") {  // whole seconds, and ignored by PQconnectPoll anyway
      common.emplace_back(std::move(key), std::move(value));
    }
  }
  for (const auto& [name, value] : options.settings) {
    if (!settings.empty()) settings += ' ';
    settings += settingArgument(name, value);
  }
  if (!settings.empty()) common.emplace_back("options", settings);

  // As libpq counts them: hostaddr when given, else host.
  const std::size_t count = addresses ? addresses->size() : hosts ? hosts->size() : 1;
  if (hosts && addresses && hosts->size() != addresses->size()) {
    throw Error(ErrorCode::InvalidArgument, "invalid PostgreSQL connection string: " + std::to_string(hosts->size()) +
                                                " host names but " + std::to_string(addresses->size()) +
                                                " hostaddr values");
  }
  if (ports && ports->size() != 1 && ports->size() != count) {
    throw Error(ErrorCode::InvalidArgument, "invalid PostgreSQL connection string: " + std::to_string(ports->size()) +
                                                " port numbers for " + std::to_string(count) + " hosts");
  }
  for (auto& [key, value] : common) {
    if (key == "target_session_attrs" && value == "prefer-standby") {
      // Each attempt is one libpq connect to one host, where prefer-standby would accept a primary
      // at once: ask for a standby, and for any host in a second pass over the list.
      preferStandby_ = true;
      value = "standby";
    }
  }
  for (std::size_t i = 0; i < count; ++i) {
    Host host;
    host.keywords = common;
    std::string name, port;
    // An empty element means libpq's default: leave the keyword out.
    if (hosts && !(*hosts)[i].empty()) {
      name = (*hosts)[i];
      host.keywords.emplace_back("host", name);
    }
    if (addresses && !(*addresses)[i].empty()) {
      if (name.empty()) name = (*addresses)[i];
      host.keywords.emplace_back("hostaddr", (*addresses)[i]);
    }
    if (ports) port = ports->size() == 1 ? ports->front() : (*ports)[i];
    if (!port.empty()) host.keywords.emplace_back("port", port);
    host.label = (name.empty() ? std::string("default host") : name) + ":" + (port.empty() ? "default port" : port);
    if (preferStandby_) {
      host.fallback = host.keywords;
      for (auto& [key, value] : host.fallback) {
        if (key == "target_session_attrs") value = "any";
      }
    }
    hosts_.push_back(std::move(host));
  }
  if (shared && shared->empty()) shared->resize(hosts_.size());
  demoted_ = shared && shared->size() == hosts_.size() ? std::move(shared)
                                                        : std::make_shared<Demotions>(hosts_.size());
}

std::vector<std::size_t> PgTargets::order(Deadline now) const {
  const Demotions& demoted = *demoted_;
  std::vector<std::size_t> out;
  out.reserve(hosts_.size());
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    if (demoted[i] <= now) out.push_back(i);
  }
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    if (demoted[i] > now) out.push_back(i);
  }
  return out;
}

PgConnection::PgConnection(Loop& loop, Owner& owner, PgTargets& targets, const PgConnectionConfig& config,
                           const Logger& logger)
    : loop_(loop), owner_(owner), targets_(targets), config_(config), logger_(logger) {}

PgConnection::~PgConnection() { close(); }

void PgConnection::log(LogLevel level, const std::string& message) const noexcept {
  try {
    if (logger_) logger_(level, message);
  } catch (...) {
    // A logger that throws must not take the I/O thread down.
  }
}

// --- connecting ---------------------------------------------------------------------------------

void PgConnection::connect() {
  state_ = State::Connecting;
  const Deadline now = Clock::now();
  connectDeadline_ = saturatingAdd(now, config_.connectTimeout);
  hostsLeft_ = targets_.order(now);
  std::reverse(hostsLeft_.begin(), hostsLeft_.end());  // taken from the back
  fallbackPass_ = false;
  fallbackLeft_ = targets_.preferStandby();
  startAttempt();
}

void PgConnection::startAttempt() {
  for (;;) {
    if (hostsLeft_.empty() && fallbackLeft_ && !passed(connectDeadline_)) {
      // prefer-standby found no standby: any host will do now, those that timed out last.
      fallbackLeft_ = false;
      fallbackPass_ = true;
      hostsLeft_ = targets_.order(Clock::now());
      std::reverse(hostsLeft_.begin(), hostsLeft_.end());
    }
    if (hostsLeft_.empty() || passed(connectDeadline_)) break;
    host_ = hostsLeft_.back();
    hostsLeft_.pop_back();
    // The last host left gets the rest of the connect deadline: nothing else is left to try.
    attemptDeadline_ = hostsLeft_.empty() && !fallbackLeft_
                           ? connectDeadline_
                           : std::min(connectDeadline_, deadlineIn(config_.hostAttemptTimeout));
    const PgTargets::Keywords& keywords = fallbackPass_ ? targets_.fallbackKeywords(host_) : targets_.keywords(host_);
    if (launch(keywords)) return;
  }
  finishConnect(Error(attemptTimedOut_ || passed(connectDeadline_) ? ErrorCode::Timeout : ErrorCode::ConnectFailed,
                      attemptTimedOut_ || passed(connectDeadline_)
                          ? "connecting to PostgreSQL timed out (" + connectErrors_ + "deadline " +
                                std::to_string(config_.connectTimeout.count()) + " ms)"
                          : "cannot connect to PostgreSQL: " + connectErrors_.substr(0, connectErrors_.size() - 2)));
}

bool PgConnection::launch(const PgTargets::Keywords& keywords) {
  std::vector<const char*> keys, values;
  for (const auto& [key, value] : keywords) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectStartParams(keys.data(), values.data(), 0);
  if (conn_ == nullptr) {
    connectErrors_ += targets_.label(host_) + ": out of memory; ";
    attemptTimedOut_ = false;
    return false;
  }
  // Server notices (e.g. "table does not exist, skipping") are not errors; keep them off stderr.
  PQsetNoticeProcessor(conn_, ignoreNotice, nullptr);
  if (PQstatus(conn_) == CONNECTION_BAD) {
    connectErrors_ += targets_.label(host_) + ": " + pgOneLine(PQerrorMessage(conn_)) + "; ";
    attemptTimedOut_ = false;
    PQfinish(conn_);
    conn_ = nullptr;
    return false;
  }
  armAttemptTimer();
  // As if PQconnectPoll had answered PGRES_POLLING_WRITING, as libpq's documentation says.
  watchConnect(PGRES_POLLING_WRITING);
  return true;
}

void PgConnection::armAttemptTimer() {
  if (timer_ != 0) return;
  timer_ = loop_.at(attemptDeadline_, [this] {
    timer_ = 0;
    const bool others = (!hostsLeft_.empty() || fallbackLeft_) && !passed(connectDeadline_);
    if (others) {
      targets_.demote(host_, deadlineIn(config_.demoteFor));
      log(LogLevel::Warning, "PostgreSQL host " + targets_.label(host_) + " did not answer within " +
                                 std::to_string(config_.hostAttemptTimeout.count()) +
                                 " ms; trying the next host (this one is tried last for " +
                                 std::to_string(config_.demoteFor.count() / 1000) + " s)");
    }
    attemptFailed("timed out", true);
  });
}

void PgConnection::attemptFailed(const std::string& why, bool timedOut) {
  unwatch();
  cancelTimer();
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  connectErrors_ += targets_.label(host_) + ": " + why + "; ";
  attemptTimedOut_ = timedOut;
  startAttempt();
}

void PgConnection::watchConnect(int status) {
  // libpq may have closed the socket and opened another (the next address of a host, or a retry
  // without SSL), perhaps with the same number: register afresh at every step.
  unwatch();
  const int fd = PQsocket(conn_);
  if (fd < 0) {
    attemptFailed(pgOneLine(PQerrorMessage(conn_)), false);
    return;
  }
  try {
    loop_.watch(fd, this, status == PGRES_POLLING_READING ? EPOLLIN : EPOLLOUT);
    watchedFd_ = fd;
    watchedEvents_ = status == PGRES_POLLING_READING ? EPOLLIN : EPOLLOUT;
  } catch (const Error& e) {
    attemptFailed(e.what(), false);
  }
}

void PgConnection::pollConnect() {
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_OK:
      connected();
      return;
    case PGRES_POLLING_FAILED:
      attemptFailed(pgOneLine(PQerrorMessage(conn_)), false);
      return;
    case PGRES_POLLING_READING:
      watchConnect(PGRES_POLLING_READING);
      return;
    default:
      watchConnect(PGRES_POLLING_WRITING);
      return;
  }
}

void PgConnection::connected() {
  cancelTimer();
  if (PQsetnonblocking(conn_, 1) != 0 || PQenterPipelineMode(conn_) != 1) {
    attemptFailed("cannot enter non-blocking pipeline mode: " + pgOneLine(PQerrorMessage(conn_)), false);
    return;
  }
  // The server aborts a statement soon after its client went away (the library closes the
  // connection of a statement that timed out). Pipelined ahead of the first statement.
  if (config_.connectionCheckInterval.count() > 0 && PQserverVersion(conn_) >= 140000) {
    const std::string sql =
        "SET client_connection_check_interval = " + std::to_string(config_.connectionCheckInterval.count());
    if (PQsendQueryParams(conn_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1 ||
        PQpipelineSync(conn_) != 1) {
      attemptFailed("cannot send the session setup: " + pgOneLine(PQerrorMessage(conn_)), false);
      return;
    }
    entries_.push_back(Entry{});
  }
  state_ = State::Ready;
  if (!flush()) {
    state_ = State::Connecting;
    entries_.clear();
    attemptFailed("cannot send the session setup: " + pgOneLine(PQerrorMessage(conn_)), false);
    return;
  }
  hostsLeft_.clear();
  connectErrors_.clear();
  owner_.connectionReady(*this);
}

void PgConnection::finishConnect(Error error) {
  state_ = State::Closed;
  unwatch();
  cancelTimer();
  // Reported from the loop, never inside connect(), which may have failed before any I/O.
  timer_ = loop_.at(Clock::now(), [this, error = std::move(error)]() mutable {
    timer_ = 0;
    owner_.connectFailed(*this, std::move(error));
  });
}

// --- connected ----------------------------------------------------------------------------------

std::optional<Deadline> PgConnection::oldestSentAt() const noexcept {
  for (const auto& entry : entries_) {
    if (entry.statement) return entry.sentAt;
  }
  return std::nullopt;
}

std::shared_ptr<PgStatement> PgConnection::oldestStatement() const noexcept {
  for (const auto& entry : entries_) {
    if (entry.statement) return entry.statement;
  }
  return nullptr;
}

void PgConnection::forgetPrepared(const std::string& sql) noexcept {
  // Statements in flight keep the old one (their Entry holds it); a stale one stays allocated in
  // the session, under a name never used again, until the connection closes.
  prepared_.erase(sql);
}

int PgConnection::backendPid() const noexcept { return conn_ != nullptr ? PQbackendPID(conn_) : 0; }

bool PgConnection::send(const std::shared_ptr<PgStatement>& statement) {
  Entry entry;
  entry.statement = statement;
  entry.sentAt = Clock::now();
  std::vector<const char*> values;
  values.reserve(statement->params.size());
  for (const auto& p : statement->params) values.push_back(p ? p->c_str() : nullptr);
  const int count = static_cast<int>(values.size());
  int ok = 0;
  // Past kMaxPrepared texts, a new one runs unprepared: a caller that builds SQL text on the fly
  // must not grow the session (and this map) without bound.
  if (!config_.prepareStatements || (prepared_.size() >= kMaxPrepared && prepared_.count(statement->sql) == 0)) {
    ok = PQsendQueryParams(conn_, statement->sql.c_str(), count, nullptr, values.data(), nullptr, nullptr, 0);
  } else {
    std::shared_ptr<Prepared>& slot = prepared_[statement->sql];
    ok = 1;
    if (!slot) {
      slot = std::make_shared<Prepared>();
      slot->name = "streamlock_" + std::to_string(++nextName_);
      entry.prepares = true;
      entry.phase = Phase::Prepare;
      ok = PQsendPrepare(conn_, slot->name.c_str(), statement->sql.c_str(), count, nullptr);
    }
    entry.uses = slot;
    ok = ok && PQsendQueryPrepared(conn_, slot->name.c_str(), count, values.data(), nullptr, nullptr, 0);
  }
  ok = ok && PQpipelineSync(conn_);
  entries_.push_back(std::move(entry));
  ++userInFlight_;
  if (ok == 1 && flush()) return true;
  lostError_.emplace(ErrorCode::ConnectionLost, "PostgreSQL connection lost: " + pgOneLine(PQerrorMessage(conn_)));
  unwatch();
  PQfinish(conn_);
  conn_ = nullptr;
  state_ = State::Closed;
  return false;
}

bool PgConnection::flush() {
  const int flushed = PQflush(conn_);
  if (flushed < 0) return false;
  writeBlocked_ = flushed == 1;
  try {
    setWatch(writeBlocked_);
  } catch (const Error&) {
    return false;
  }
  return true;
}

void PgConnection::setWatch(bool write) {
  const int fd = PQsocket(conn_);
  const std::uint32_t events = EPOLLIN | (write ? EPOLLOUT : 0U);
  if (fd == watchedFd_ && events == watchedEvents_) return;
  if (fd != watchedFd_) unwatch();
  loop_.watch(fd, this, events);
  watchedFd_ = fd;
  watchedEvents_ = events;
}

void PgConnection::onIo(std::uint32_t events) {
  if (state_ == State::Connecting) {
    if (conn_ != nullptr) pollConnect();
    return;
  }
  if (state_ != State::Ready) return;
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 && PQconsumeInput(conn_) != 1) {
    lose(pgOneLine(PQerrorMessage(conn_)), {});
    return;
  }
  // libpq's rule for a pending flush: after the socket turned readable too, flush again.
  if (writeBlocked_ && !flush()) {
    lose(pgOneLine(PQerrorMessage(conn_)), {});
    return;
  }
  std::vector<PgFinished> finished;
  drain(finished);
  if (state_ != State::Ready || PQstatus(conn_) == CONNECTION_BAD) {
    lose(lostError_ ? lostError_->what() : pgOneLine(PQerrorMessage(conn_)), std::move(finished));
    return;
  }
  if (!finished.empty()) owner_.connectionProgress(*this, std::move(finished), std::nullopt, {});
}

void PgConnection::drain(std::vector<PgFinished>& finished) {
  while (!entries_.empty() && state_ == State::Ready) {
    if (PQisBusy(conn_)) return;  // PQgetResult would block
    PGresult* raw = PQgetResult(conn_);
    Entry& entry = entries_.front();
    if (entry.phase != Phase::Sync) {
      // Each command's results end with a null; then the next command's (or the Sync's) begin.
      if (raw == nullptr) {
        entry.phase = entry.phase == Phase::Prepare ? Phase::Execute : Phase::Sync;
      } else {
        take(entry, raw);
      }
      continue;
    }
    // libpq is busy until the Sync's answer arrives, so a null here means a lost connection,
    // which onIo() finds in PQstatus.
    if (raw == nullptr) return;
    if (PQresultStatus(raw) == PGRES_PIPELINE_SYNC) {
      PQclear(raw);
      complete(entry, finished);
      entries_.pop_front();
      continue;
    }
    take(entry, raw);  // e.g. an error raised at the implicit commit
  }
}

void PgConnection::take(Entry& entry, PGresult* raw) {
  const ExecStatusType status = PQresultStatus(raw);
  switch (status) {
    case PGRES_FATAL_ERROR: {
      const char* state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
      const char* primary = PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY);
      std::string message = primary ? primary : pgOneLine(PQresultErrorMessage(raw));
      Error error(ErrorCode::ServerError, "PostgreSQL error: " + (message.empty() ? std::string("unknown") : message),
                  state ? state : "");
      PQclear(raw);
      if (entry.phase == Phase::Prepare && entry.uses) {
        // Nothing is cached for a statement that does not prepare: the next send prepares again.
        entry.uses->status = Prepared::Status::Failed;
        entry.uses->error = error;
        const auto it = prepared_.find(entry.statement->sql);
        if (it != prepared_.end() && it->second == entry.uses) prepared_.erase(it);
      } else if (entry.phase == Phase::Execute && !entry.prepares && entry.uses &&
                 entry.uses->status == Prepared::Status::Failed && error.sqlstate() == "26000") {
        // Sent behind a Prepare of the same text that failed: fail as that Prepare did, not with
        // "prepared statement does not exist".
        error = *entry.uses->error;
      } else if (entry.phase == Phase::Execute && entry.uses && !entry.prepares && !entry.error &&
                 (error.sqlstate() == "26000" || error.sqlstate() == "0A000")) {
        // The statement prepared earlier is gone from the session (a caller's DEALLOCATE) or was
        // planned for another row type (an ALTER TABLE: "cached plan must not change result
        // type"): prepare it again next time, and let the pool send it once more.
        forgetPrepared(entry.statement->sql);
        entry.stalePrepared = true;
      }
      if (!entry.error) entry.error = std::move(error);
      return;
    }
    case PGRES_PIPELINE_ABORTED:
      PQclear(raw);
      if (!entry.error) {
        entry.error.emplace(ErrorCode::ServerError, "PostgreSQL statement skipped after an error in its pipeline");
      }
      return;
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
    case PGRES_SINGLE_TUPLE:
      if (entry.phase == Phase::Prepare) {
        PQclear(raw);
        if (entry.uses && entry.uses->status == Prepared::Status::Pending) entry.uses->status = Prepared::Status::Ready;
        return;
      }
      if (entry.phase == Phase::Execute && !entry.haveResult) {
        entry.result = PgResult(raw);
        entry.haveResult = true;
        return;
      }
      PQclear(raw);
      return;
    default:
      // COPY, a bad response, a Sync where none was due: this connection's protocol state is
      // unknown now, so it is dropped.
      PQclear(raw);
      lostError_.emplace(ErrorCode::ConnectionLost,
                         std::string("unexpected PostgreSQL result ") + PQresStatus(status) + "; connection dropped");
      state_ = State::Closed;
      return;
  }
}

void PgConnection::complete(Entry& entry, std::vector<PgFinished>& finished) {
  if (!entry.statement) {
    if (entry.error) log(LogLevel::Debug, std::string("PostgreSQL session setup failed: ") + entry.error->what());
    return;
  }
  --userInFlight_;
  ++completed_;
  if (entry.error) {
    finished.push_back(PgFinished{std::move(entry.statement), std::move(*entry.error), entry.stalePrepared});
  } else if (entry.haveResult) {
    finished.push_back(PgFinished{std::move(entry.statement), std::move(entry.result)});
  } else {
    finished.push_back(
        PgFinished{std::move(entry.statement), Error(ErrorCode::ServerError, "PostgreSQL returned no result")});
  }
}

void PgConnection::lose(const std::string& why, std::vector<PgFinished> finished) {
  Error lost(ErrorCode::ConnectionLost,
             why.rfind("PostgreSQL connection lost", 0) == 0 ? why : "PostgreSQL connection lost: " + why);
  std::vector<PgOrphan> orphans;
  for (auto& entry : entries_) {
    if (!entry.statement) continue;
    // A server error already read for it (e.g. 57P01, the server shutting down) says more.
    if (entry.error) {
      orphans.push_back(PgOrphan{std::move(entry.statement),
                                 Error(ErrorCode::ConnectionLost, entry.error->what(), entry.error->sqlstate())});
    } else {
      orphans.push_back(PgOrphan{std::move(entry.statement), lost});
    }
  }
  entries_.clear();
  userInFlight_ = 0;
  lostError_ = lost;
  unwatch();
  cancelTimer();
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  state_ = State::Closed;
  owner_.connectionProgress(*this, std::move(finished), std::move(lost), std::move(orphans));
}

// --- closing ------------------------------------------------------------------------------------

std::vector<std::shared_ptr<PgStatement>> PgConnection::close() {
  std::vector<std::shared_ptr<PgStatement>> out;
  for (auto& entry : entries_) {
    if (entry.statement) out.push_back(std::move(entry.statement));
  }
  entries_.clear();
  userInFlight_ = 0;
  unwatch();
  cancelTimer();
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  state_ = State::Closed;
  return out;
}

void PgConnection::abandonAfterFork() noexcept {
  if (conn_ != nullptr) {
    const int fd = PQsocket(conn_);
    bool silenced = fd < 0;
    if (!silenced) {
      const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      if (null >= 0) {
        silenced = ::dup2(null, fd) == fd;
        ::close(null);
      }
    }
    // Without /dev/null on the socket, PQfinish would write on the parent's connection: leak it.
    if (silenced) PQfinish(conn_);
    conn_ = nullptr;
  }
  entries_.clear();
  userInFlight_ = 0;
  prepared_.clear();
  watchedFd_ = -1;  // the child shares the parent's epoll set: never unwatch
  timer_ = 0;       // nor touch the loop's timers
  state_ = State::Closed;
}

void PgConnection::unwatch() noexcept {
  if (watchedFd_ < 0) return;
  loop_.unwatch(watchedFd_);
  watchedFd_ = -1;
  watchedEvents_ = 0;
}

void PgConnection::cancelTimer() noexcept {
  if (timer_ == 0) return;
  loop_.cancel(timer_);
  timer_ = 0;
}

}  // namespace streamlock::detail
