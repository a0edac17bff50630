#pragma once

// The PostgreSQL pool on the I/O thread: up to poolSize PgConnections opened lazily, a FIFO of
// statements waiting for one, and the deadlines of each statement.

#include <atomic>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"

namespace streamlock::detail {

struct PgPoolConfig {
  PostgresOptions options;
  // Statements pipelined on one connection at most. 1: one statement per connection at a time.
  std::size_t maxInFlight = 1;
  // A connection whose oldest statement in flight is older than this takes no more (it may be
  // stuck behind a lock): callers then get another connection, or the bounded pool wait.
  Milliseconds stallAfter{100};
  // How long a host whose attempt timed out is tried last.
  Milliseconds demoteFor{30000};
  // client_connection_check_interval of the sessions (servers >= 14); 0: not set. Not set either
  // when options.settings sets it.
  Milliseconds connectionCheckInterval{1000};
  // Shared with the other pools of the same Client (see PgTargets::Demotions); null: its own.
  std::shared_ptr<PgTargets::Demotions> demotions = nullptr;
};

// What libpq cannot carry: a NUL byte in the SQL text or a parameter (text parameters are C
// strings), more than 65535 parameters. Error(InvalidArgument), or nullopt.
std::optional<Error> pgInvalidArguments(std::string_view sql, const PgParams& params);

// Loop thread only, except stats() and limits(). Never destroy it inside one of its own callbacks.
class PgPoolCore final : private PgConnection::Owner {
 public:
  // Throws Error(InvalidArgument) when the conninfo does not parse. Connects lazily.
  PgPoolCore(Loop& loop, PgPoolConfig config, Logger logger);
  // On the loop thread or once the loop has stopped: close() without a callback.
  ~PgPoolCore();
  PgPoolCore(const PgPoolCore&) = delete;
  PgPoolCore& operator=(const PgPoolCore&) = delete;

  // The limits of a call made now: acquireBy = now + acquireTimeout, timeout (else
  // statementTimeout), and notAfter as given.
  StatementLimits limits(std::optional<Milliseconds> timeout, Deadline notAfter = Deadline::max()) const noexcept;

  // Runs one statement; done gets the rows or the Error, on the loop thread, exactly once and never
  // inside this call. Errors: InvalidArgument (see pgInvalidArguments), PoolExhausted (no connection by limits.acquireBy), ConnectFailed or
  // Timeout (the connect this statement started failed), Timeout (limits.timeout after it was
  // sent, or limits.notAfter), ConnectionLost, ServerError (with the SQLSTATE), ShutDown.
  // A statement that failed with ConnectionLost on a connection that had completed statements
  // before (it may have died while idle) is sent once more on another connection, so statements
  // must be safe to repeat. Statements pipelined behind one that timed out (maxInFlight > 1) are
  // queued once more, as their connection is closed.
  void execute(std::string sql, PgParams params, StatementLimits limits, PgDone done);

  // Fails waiting and in-flight statements with ShutDown, PQfinishes every connection, then calls
  // done (inline). Later execute() calls fail with ShutDown. Idempotent.
  void close(std::function<void()> done = {});

  // fork() child: frees every connection without sending anything on the parent's sockets and
  // without touching the loop; statements are dropped uncalled. The core is inert afterwards.
  void abandonAfterFork() noexcept;

  struct Stats {
    std::size_t open = 0;      // connections that exist (connecting, idle or in use)
    std::size_t inUse = 0;     // with statements in flight
    std::size_t idle = 0;      // connected, nothing in flight
    std::size_t capacity = 0;  // poolSize
  };
  // Thread-safe.
  Stats stats() const noexcept;

  // Backend pids of the connections that are connected (tests, diagnostics).
  std::vector<int> backendPids() const;

 private:
  using StatementPtr = std::shared_ptr<PgStatement>;
  // A statement that ended: its callback runs once the core's state is consistent again.
  struct Ended {
    PgDone done;
    Result<PgResult> outcome;
  };
  using Completions = std::vector<Ended>;

  void connectionReady(PgConnection& connection) override;
  void connectFailed(PgConnection& connection, Error error) override;
  void connectionProgress(PgConnection& connection, std::vector<PgFinished> finished, std::optional<Error> lost,
                          std::vector<PgOrphan> orphans) override;

  void dispatch(Completions& out);
  void requestDispatch();
  PgConnection* pick(Deadline now) const;
  bool send(const StatementPtr& statement, PgConnection& connection, Completions& out);
  void startConnect(const StatementPtr& statement);
  void onTimer(const StatementPtr& statement);
  void closeStuck(PgConnection& connection, Deadline now, Completions& out);
  void armTimer(const StatementPtr& statement);
  void enqueueBack(const StatementPtr& statement);
  void requeue(const std::vector<StatementPtr>& statements);
  void unqueue(PgStatement& statement) noexcept;
  void finish(const StatementPtr& statement, Result<PgResult> outcome, Completions& out);
  void orphaned(std::vector<PgOrphan> orphans, Completions& out);
  void retire(PgConnection& connection);
  void closeIdle();
  void closeIdleOn(std::size_t host);
  void refreshStats() noexcept;
  void run(Completions& completions) const noexcept;
  void log(LogLevel level, const std::string& message) const noexcept;

  Loop& loop_;
  const PgPoolConfig config_;
  const Logger logger_;
  PgConnectionConfig connectionConfig_;
  PgTargets targets_;

  std::list<StatementPtr> waiting_;
  std::vector<std::unique_ptr<PgConnection>> connections_;
  std::vector<std::unique_ptr<PgConnection>> retired_;  // freed at the end of the loop iteration
  bool closed_ = false;
  bool abandoned_ = false;
  bool dispatchQueued_ = false;
  bool cleanupQueued_ = false;
  // Tasks queued on the loop hold this weakly, so that they do nothing once the core is gone.
  std::shared_ptr<PgPoolCore*> self_;

  std::atomic<std::size_t> open_{0};
  std::atomic<std::size_t> inUse_{0};
  std::atomic<std::size_t> idle_{0};
};

}  // namespace streamlock::detail
