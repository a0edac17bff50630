#include "pg/pool.h"

#include <algorithm>
#include <exception>
#include <utility>

namespace streamlock::detail {
namespace {

PgPoolConfig normalized(PgPoolConfig config) {
  if (config.options.poolSize == 0) config.options.poolSize = 1;
  if (config.maxInFlight == 0) config.maxInFlight = 1;
  for (const auto& [name, value] : config.options.settings) {
    // The application's own value wins.
    if (name == "client_connection_check_interval") config.connectionCheckInterval = Milliseconds{0};
  }
  return config;
}

Milliseconds windowUntil(Deadline from, Deadline until) noexcept {
  if (until <= from) return Milliseconds{0};
  return std::chrono::duration_cast<Milliseconds>(until - from);
}

}  // namespace

std::optional<Error> pgInvalidArguments(std::string_view sql, const PgParams& params) {
  if (sql.find('\0') != std::string_view::npos) {
    return Error(ErrorCode::InvalidArgument, "the SQL text of a statement contains a NUL byte");
  }
  if (params.size() > 65535) return Error(ErrorCode::InvalidArgument, "a statement takes at most 65535 parameters");
  for (const auto& p : params) {
    if (p && p->find('\0') != std::string::npos) {
      return Error(ErrorCode::InvalidArgument, "a statement parameter contains a NUL byte");
    }
  }
  return std::nullopt;
}

PgPoolCore::PgPoolCore(Loop& loop, PgPoolConfig config, Logger logger)
    : loop_(loop),
      config_(normalized(std::move(config))),
      logger_(std::move(logger)),
      targets_(config_.options, config_.demotions),
      self_(std::make_shared<PgPoolCore*>(this)) {
  connectionConfig_.connectTimeout = config_.options.connectTimeout;
  connectionConfig_.hostAttemptTimeout = config_.options.hostAttemptTimeout;
  connectionConfig_.demoteFor = config_.demoteFor;
  connectionConfig_.prepareStatements = config_.options.prepareStatements;
  connectionConfig_.connectionCheckInterval = config_.connectionCheckInterval;
  refreshStats();
}

PgPoolCore::~PgPoolCore() {
  if (!abandoned_) close();
}

void PgPoolCore::log(LogLevel level, const std::string& message) const noexcept {
  try {
    if (logger_) logger_(level, message);
  } catch (...) {
    // A logger that throws must not take the I/O thread down.
  }
}

StatementLimits PgPoolCore::limits(std::optional<Milliseconds> timeout, Deadline notAfter) const noexcept {
  StatementLimits out;
  out.acquireBy = deadlineIn(config_.options.acquireTimeout);
  out.timeout = timeout.value_or(config_.options.statementTimeout);
  out.notAfter = notAfter;
  return out;
}

void PgPoolCore::execute(std::string sql, PgParams params, StatementLimits limits, PgDone done) {
  auto statement = std::make_shared<PgStatement>();
  statement->sql = std::move(sql);
  statement->params = std::move(params);
  statement->limits = limits;
  statement->done = std::move(done);
  statement->enqueuedAt = Clock::now();
  statement->acquireWindow = windowUntil(statement->enqueuedAt, limits.acquireBy);
  std::optional<Error> refused = pgInvalidArguments(statement->sql, statement->params);
  if (!refused && closed_) refused.emplace(ErrorCode::ShutDown, "the PostgreSQL pool is closed");
  if (refused) {
    statement->state = PgStatement::State::Done;
    // Never inside this call.
    loop_.atEndOfIteration([statement, error = std::move(*refused)]() mutable {
      PgDone callback = std::move(statement->done);
      if (callback) callback(std::move(error));
    });
    return;
  }
  enqueueBack(statement);
  armTimer(statement);
  requestDispatch();
}

void PgPoolCore::requestDispatch() {
  if (dispatchQueued_) return;
  dispatchQueued_ = true;
  // At the end of this loop iteration: the statements of every caller of this iteration at once.
  loop_.atEndOfIteration([weak = std::weak_ptr<PgPoolCore*>(self_)] {
    const auto self = weak.lock();
    if (!self) return;
    PgPoolCore& core = **self;
    core.dispatchQueued_ = false;
    Completions out;
    core.dispatch(out);
    core.run(out);
  });
}

// --- the waiting list ----------------------------------------------------------------------------

void PgPoolCore::enqueueBack(const StatementPtr& statement) {
  statement->state = PgStatement::State::Waiting;
  statement->waitPos = waiting_.insert(waiting_.end(), statement);
  statement->queued = true;
}

void PgPoolCore::requeue(const std::vector<StatementPtr>& statements) {
  // At the front, in their order: they were sent before anything still waiting.
  const auto front = waiting_.begin();
  const Deadline now = Clock::now();
  for (const auto& statement : statements) {
    statement->state = PgStatement::State::Waiting;
    statement->connection = nullptr;
    statement->limits.acquireBy = std::min(saturatingAdd(now, statement->acquireWindow), statement->limits.notAfter);
    statement->waitPos = waiting_.insert(front, statement);
    statement->queued = true;
    armTimer(statement);
  }
}

void PgPoolCore::unqueue(PgStatement& statement) noexcept {
  if (!statement.queued) return;
  waiting_.erase(statement.waitPos);
  statement.queued = false;
}

// --- deadlines -----------------------------------------------------------------------------------

void PgPoolCore::armTimer(const StatementPtr& statement) {
  if (statement->timer != 0) {
    loop_.cancel(statement->timer);
    statement->timer = 0;
  }
  const StatementLimits& limits = statement->limits;
  Deadline when = limits.notAfter;
  if (statement->state == PgStatement::State::InFlight) {
    when = std::min(when, saturatingAdd(statement->sentAt, limits.timeout));
  } else if (statement->state == PgStatement::State::Waiting) {
    // A statement whose own connect is under way waits for it past acquireBy.
    if (statement->claim == nullptr || Clock::now() < limits.acquireBy) when = std::min(when, limits.acquireBy);
  } else {
    return;
  }
  if (when == Deadline::max()) return;
  statement->timer = loop_.at(when, [weak = std::weak_ptr<PgPoolCore*>(self_), statement] {
    statement->timer = 0;
    if (const auto self = weak.lock()) (*self)->onTimer(statement);
  });
}

void PgPoolCore::onTimer(const StatementPtr& statement) {
  Completions out;
  const Deadline now = Clock::now();
  if (statement->state == PgStatement::State::Waiting) {
    if (now >= statement->limits.notAfter) {
      finish(statement, Error(ErrorCode::Timeout, "the PostgreSQL call ran out of time before its statement was sent"),
             out);
    } else if (now >= statement->limits.acquireBy && statement->claim == nullptr) {
      finish(statement, Error(ErrorCode::PoolExhausted, "no PostgreSQL connection freed up before the deadline"), out);
    } else {
      armTimer(statement);
    }
  } else if (statement->state == PgStatement::State::InFlight && statement->connection != nullptr) {
    PgConnection& connection = *statement->connection;
    const bool oldest = connection.oldestStatement() == statement;
    finish(statement, Error(ErrorCode::Timeout, "PostgreSQL statement timed out"), out);
    // The oldest in flight is the one the server runs: close the connection to stop it. One
    // behind others is still waiting for them, whose own time is not up: the connection stays
    // for them, and the result of the one that timed out is dropped when it comes (or, should
    // it still run once they are done, connectionProgress closes the connection then).
    if (oldest) {
      const std::size_t host = connection.host();
      closeStuck(connection, now, out);
      // The server may hang as a whole (a frozen host, a partition that keeps TCP sessions, an
      // old primary after a failover): its idle connections look healthy and each would cost the
      // next statement a whole timeout. Open fresh ones instead: a hung host then costs one
      // per-host connect attempt, after which it is tried last.
      closeIdleOn(host);
    }
  }
  refreshStats();
  dispatch(out);
  run(out);
}

// Closes a connection whose oldest statement in flight ran out of time; the server aborts the
// statement once it notices (see client_connection_check_interval). Those pipelined behind it
// have not run yet: they are queued once more, once.
void PgPoolCore::closeStuck(PgConnection& connection, Deadline now, Completions& out) {
  std::vector<StatementPtr> behind;
  for (auto& other : connection.close()) {
    if (other->state == PgStatement::State::Done) continue;  // timed out already
    if (!other->requeued && now < other->limits.notAfter) {
      other->requeued = true;
      behind.push_back(std::move(other));
    } else {
      finish(other, Error(ErrorCode::ConnectionLost, "PostgreSQL connection closed: a statement ahead of this one timed out"),
             out);
    }
  }
  retire(connection);
  requeue(behind);
}

// --- dispatching ---------------------------------------------------------------------------------

PgConnection* PgPoolCore::pick(Deadline now) const {
  PgConnection* best = nullptr;
  for (const auto& connection : connections_) {
    if (!connection->ready()) continue;
    const std::size_t inFlight = connection->inFlight();
    if (inFlight >= config_.maxInFlight) continue;
    if (inFlight > 0) {
      // Stuck behind a slow statement (a row lock, a long scan): no more on this one.
      const auto oldest = connection->oldestSentAt();
      if (oldest && now - *oldest >= config_.stallAfter) continue;
    }
    if (best == nullptr || inFlight < best->inFlight()) best = connection.get();
  }
  return best;
}

void PgPoolCore::dispatch(Completions& out) {
  if (closed_) return;
  const Deadline now = Clock::now();
  // Connections that can take a statement get the oldest waiting ones.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    PgConnection* connection = pick(now);
    if (connection == nullptr) break;
    const StatementPtr statement = *it;
    ++it;  // statements a failed send queues again go to the front, before `it`
    if (!send(statement, *connection, out)) requestDispatch();
  }
  // The others open connections while the pool has room, or claim a connect nobody waits for.
  for (const auto& statement : waiting_) {
    if (statement->claim != nullptr) continue;
    PgConnection* unclaimed = nullptr;
    for (const auto& connection : connections_) {
      if (connection->connecting() && connection->claimant == nullptr) {
        unclaimed = connection.get();
        break;
      }
    }
    if (unclaimed != nullptr) {
      unclaimed->claimant = statement.get();
      statement->claim = unclaimed;
      continue;
    }
    if (connections_.size() >= config_.options.poolSize) break;
    startConnect(statement);
  }
  // Past acquireBy with no connection and no connect of their own: the pool is exhausted.
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    const StatementPtr statement = *it;
    ++it;
    if (statement->claim == nullptr && now >= statement->limits.acquireBy) {
      finish(statement, Error(ErrorCode::PoolExhausted, "no PostgreSQL connection freed up before the deadline"), out);
    }
  }
  refreshStats();
}

bool PgPoolCore::send(const StatementPtr& statement, PgConnection& connection, Completions& out) {
  unqueue(*statement);
  if (statement->claim != nullptr) {
    statement->claim->claimant = nullptr;
    statement->claim = nullptr;
  }
  statement->state = PgStatement::State::InFlight;
  statement->connection = &connection;
  statement->reusedConnection = connection.completed() > 0;
  statement->sentAt = Clock::now();
  armTimer(statement);
  if (connection.send(statement)) return true;
  const Error error = connection.lostError().value_or(Error(ErrorCode::ConnectionLost, "PostgreSQL connection lost"));
  std::vector<PgOrphan> orphans;
  for (auto& other : connection.close()) orphans.push_back(PgOrphan{std::move(other), error});
  retire(connection);
  log(LogLevel::Info, error.what());
  orphaned(std::move(orphans), out);
  return false;
}

void PgPoolCore::startConnect(const StatementPtr& statement) {
  PgConnection::Owner& owner = *this;
  auto connection = std::make_unique<PgConnection>(loop_, owner, targets_, connectionConfig_, logger_);
  connection->claimant = statement.get();
  statement->claim = connection.get();
  PgConnection& opened = *connection;
  connections_.push_back(std::move(connection));
  opened.connect();  // reports through the Owner interface, never inside this call
}

void PgPoolCore::orphaned(std::vector<PgOrphan> orphans, Completions& out) {
  // A connection that had completed statements may have died while idle (a server restart, an
  // idle timeout): send its statements once more, elsewhere.
  std::vector<StatementPtr> again;
  const Deadline now = Clock::now();
  for (auto& orphan : orphans) {
    PgStatement& statement = *orphan.statement;
    if (statement.state == PgStatement::State::Done) continue;  // timed out already: never sent again
    if (orphan.error.code() == ErrorCode::ConnectionLost && statement.reusedConnection && !statement.retried &&
        now < statement.limits.notAfter) {
      statement.retried = true;
      again.push_back(std::move(orphan.statement));
    } else {
      finish(orphan.statement, std::move(orphan.error), out);
    }
  }
  if (again.empty()) return;
  // The idle ones likely died the same way: do not hand them out.
  closeIdle();
  requeue(again);
}

void PgPoolCore::finish(const StatementPtr& given, Result<PgResult> outcome, Completions& out) {
  const StatementPtr statement = given;  // `given` may live in waiting_, which unqueue() erases
  if (statement->state == PgStatement::State::Done) return;
  unqueue(*statement);
  if (statement->timer != 0) {
    loop_.cancel(statement->timer);
    statement->timer = 0;
  }
  if (statement->claim != nullptr) {
    statement->claim->claimant = nullptr;
    statement->claim = nullptr;
  }
  statement->state = PgStatement::State::Done;
  statement->connection = nullptr;
  out.push_back(Ended{std::move(statement->done), std::move(outcome)});
}

void PgPoolCore::run(Completions& completions) const noexcept {
  for (auto& ended : completions) {
    if (!ended.done) continue;
    try {
      ended.done(std::move(ended.outcome));
    } catch (const std::exception& e) {
      log(LogLevel::Error, std::string("a PostgreSQL completion threw: ") + e.what());
    } catch (...) {
      log(LogLevel::Error, "a PostgreSQL completion threw");
    }
  }
  completions.clear();
}

// --- connection events ---------------------------------------------------------------------------

void PgPoolCore::connectionReady(PgConnection& connection) {
  if (connection.claimant != nullptr) {
    connection.claimant->claim = nullptr;
    connection.claimant = nullptr;
  }
  Completions out;
  dispatch(out);
  run(out);
}

void PgPoolCore::connectFailed(PgConnection& connection, Error error) {
  Completions out;
  PgStatement* claimant = connection.claimant;
  retire(connection);
  log(LogLevel::Debug, error.what());
  if (claimant != nullptr) {
    // The statement that started this connect fails with its error; the others keep waiting.
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
      if (it->get() == claimant) {
        finish(StatementPtr(*it), std::move(error), out);
        break;
      }
    }
  }
  dispatch(out);
  run(out);
}

void PgPoolCore::connectionProgress(PgConnection& connection, std::vector<PgFinished> finished,
                                    std::optional<Error> lost, std::vector<PgOrphan> orphans) {
  Completions out;
  std::vector<StatementPtr> again;
  const Deadline now = Clock::now();
  for (auto& ended : finished) {
    PgStatement& statement = *ended.statement;
    if (ended.stalePrepared && !statement.staleRetried && statement.state == PgStatement::State::InFlight &&
        now < statement.limits.notAfter) {
      // Its prepared statement went stale (nothing ran): every connection prepares it again, and
      // it is sent once more.
      for (const auto& other : connections_) other->forgetPrepared(statement.sql);
      statement.staleRetried = true;
      again.push_back(std::move(ended.statement));
      continue;
    }
    finish(ended.statement, std::move(ended.outcome), out);
  }
  requeue(again);
  if (lost) {
    retire(connection);
    log(orphans.empty() ? LogLevel::Debug : LogLevel::Info, lost->what());
    orphaned(std::move(orphans), out);
  } else if (const auto oldest = connection.oldestStatement(); oldest && oldest->state == PgStatement::State::Done) {
    // Every result that came was read, and the oldest in flight now is one that timed out behind
    // others: the server still runs it, past its time.
    closeStuck(connection, now, out);
  }
  dispatch(out);
  run(out);
}

// --- connections ---------------------------------------------------------------------------------

void PgPoolCore::retire(PgConnection& connection) {
  const auto it = std::find_if(connections_.begin(), connections_.end(),
                               [&](const auto& owned) { return owned.get() == &connection; });
  if (it == connections_.end()) return;
  connection.close();  // nothing can be in flight here any more
  if (connection.claimant != nullptr) {
    connection.claimant->claim = nullptr;
    connection.claimant = nullptr;
  }
  retired_.push_back(std::move(*it));
  connections_.erase(it);
  refreshStats();
  if (cleanupQueued_) return;
  cleanupQueued_ = true;
  // Freed once its own event handler has returned.
  loop_.atEndOfIteration([weak = std::weak_ptr<PgPoolCore*>(self_)] {
    if (const auto self = weak.lock()) {
      (*self)->cleanupQueued_ = false;
      (*self)->retired_.clear();
    }
  });
}

void PgPoolCore::closeIdle() {
  std::vector<PgConnection*> idle;
  for (const auto& connection : connections_) {
    if (connection->ready() && connection->inFlight() == 0) idle.push_back(connection.get());
  }
  for (PgConnection* connection : idle) retire(*connection);
}

void PgPoolCore::closeIdleOn(std::size_t host) {
  std::vector<PgConnection*> idle;
  for (const auto& connection : connections_) {
    if (connection->ready() && connection->inFlight() == 0 && connection->host() == host) idle.push_back(connection.get());
  }
  for (PgConnection* connection : idle) retire(*connection);
}

void PgPoolCore::close(std::function<void()> done) {
  if (!abandoned_ && !closed_) {
    closed_ = true;
    Completions out;
    std::vector<StatementPtr> statements(waiting_.begin(), waiting_.end());
    for (auto& connection : connections_) {
      for (auto& statement : connection->close()) statements.push_back(std::move(statement));
      if (connection->claimant != nullptr) {
        connection->claimant->claim = nullptr;
        connection->claimant = nullptr;
      }
    }
    for (const auto& statement : statements) {
      finish(statement, Error(ErrorCode::ShutDown, "the PostgreSQL pool is closed"), out);
    }
    // Closed (PQfinish) already; freed later, as close() may run inside a connection's event.
    for (auto& connection : connections_) retired_.push_back(std::move(connection));
    connections_.clear();
    refreshStats();
    run(out);
  }
  if (done) done();
}

void PgPoolCore::abandonAfterFork() noexcept {
  abandoned_ = true;
  closed_ = true;
  for (auto& connection : connections_) connection->abandonAfterFork();
  for (auto& connection : retired_) connection->abandonAfterFork();
  connections_.clear();
  retired_.clear();
  // Dropped uncalled: nothing waits for them in this process. Their timers stay in the (equally
  // abandoned) loop, which frees them.
  for (auto& statement : waiting_) statement->queued = false;
  waiting_.clear();
  open_ = 0;
  inUse_ = 0;
  idle_ = 0;
}

// --- stats ---------------------------------------------------------------------------------------

void PgPoolCore::refreshStats() noexcept {
  std::size_t inUse = 0, idle = 0;
  for (const auto& connection : connections_) {
    if (!connection->ready()) continue;
    if (connection->inFlight() > 0) {
      ++inUse;
    } else {
      ++idle;
    }
  }
  open_.store(connections_.size(), std::memory_order_relaxed);
  inUse_.store(inUse, std::memory_order_relaxed);
  idle_.store(idle, std::memory_order_relaxed);
}

PgPoolCore::Stats PgPoolCore::stats() const noexcept {
  Stats out;
  out.open = open_.load(std::memory_order_relaxed);
  out.inUse = inUse_.load(std::memory_order_relaxed);
  out.idle = idle_.load(std::memory_order_relaxed);
  out.capacity = config_.options.poolSize;
  return out;
}

std::vector<int> PgPoolCore::backendPids() const {
  std::vector<int> out;
  for (const auto& connection : connections_) {
    if (connection->ready()) out.push_back(connection->backendPid());
  }
  return out;
}

}  // namespace streamlock::detail
