#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "streamlock/completion.h"
#include "streamlock/log.h"
#include "streamlock/options.h"

struct pg_result;  ///< libpq's PGresult, kept out of the public headers

namespace streamlock {

namespace detail {
struct PgResultDeleter {
  void operator()(pg_result* result) const noexcept;
};
class PgPoolState;
struct PgPoolAccess;
}  // namespace detail

/// Text parameters of a statement; nullopt binds SQL NULL.
using PgParams = std::vector<std::optional<std::string>>;

/// The rows of one statement, in text format. Move-only; cheap to move.
class PgResult {
 public:
  /// An empty result: no rows, no columns.
  PgResult() = default;
  /// Takes ownership of a libpq result (PQclear on destruction).
  explicit PgResult(pg_result* result);

  /// Number of rows.
  int rows() const noexcept;
  /// Number of columns.
  int columns() const noexcept;
  /// Column index by name, or -1.
  int column(std::string_view name) const noexcept;
  /// Whether a value is SQL NULL (also true out of range).
  bool isNull(int row, int column) const noexcept;
  /// The text of a value; empty for NULL. Valid while this PgResult lives.
  std::string_view value(int row, int column) const noexcept;
  /// A copy of a value, or nullopt for NULL.
  std::optional<std::string> optional(int row, int column) const;
  /// Rows touched by INSERT/UPDATE/DELETE.
  std::uint64_t affectedRows() const noexcept;

 private:
  std::unique_ptr<pg_result, detail::PgResultDeleter> result_;
};

/// A bounded, thread-safe pool of libpq connections, driven by one I/O thread with non-blocking
/// I/O: connections open lazily (sub-second connect deadlines are honoured; a multi-host conninfo
/// is tried host by host, see PostgresOptions::hostAttemptTimeout), statements are sent in libpq's
/// pipeline mode, each prepared once per connection (PostgresOptions::prepareStatements; at most
/// 256 distinct SQL texts per connection, more run unprepared). A prepared statement that went
/// stale (an ALTER TABLE that changed its row type, a DEALLOCATE) is prepared again and its call
/// sent once more. A statement that times out fails only its own call: the statements pipelined
/// ahead of it on its connection run on. A connection that failed (I/O error, timeout, server restart) is discarded and a fresh one opened
/// on the next use. On a server >= 14 each session sets client_connection_check_interval (1 s),
/// so that the server aborts a statement soon after the pool dropped its connection.
///
/// Threads: a standalone PgPool owns one I/O thread (started on first use) and, once the completion
/// form is used without an executor, one callback thread. A Client's pool uses the Client's.
///
/// fork(): a PgPool does not survive fork(). Destroying it in the child (e.g. at exit()) only frees
/// memory: nothing is sent on the parent's connections and no thread is joined. Any other use in
/// the child throws Error(ShutDown) or completes with it.
class PgPool {
 public:
  /// Throws Error(InvalidArgument) when options.conninfo does not parse, its host and port lists do
  /// not match, or a duration is not positive (acquireTimeout may be zero). Connects lazily.
  PgPool(PostgresOptions options, Logger logger);
  /// The same; completions of the completion form run on executor (see Executor) instead of the
  /// pool's callback thread.
  PgPool(PostgresOptions options, Logger logger, Executor executor);
  /// Closes the pool (see close()), then stops its threads, running the completions still queued.
  /// It may run inside one of the pool's own completions (the callback thread then ends by itself).
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  /// Runs one parameterised statement and returns its rows. Thread-safe; never call it on the
  /// library's I/O thread.
  /// A pooled connection found broken on use (e.g. after a server restart) is replaced and the
  /// statement sent once more, so statements must be safe to repeat.
  /// Blocks at most acquireTimeout + connectTimeout + timeout (a retry included); timeout defaults
  /// to options.statementTimeout and counts from when the statement is sent. On expiry the
  /// connection is dropped (the server aborts the statement within about a second, on servers
  /// >= 14) and Error(Timeout) thrown.
  /// Throws Error: InvalidArgument (a parameter holding a NUL byte, which text cannot carry),
  /// PoolExhausted (no connection within acquireTimeout), ConnectFailed or Timeout (connecting),
  /// Timeout, ConnectionLost, ServerError (with the SQLSTATE), ShutDown.
  PgResult execute(std::string_view sql, const PgParams& params = {},
                   std::optional<Milliseconds> timeout = std::nullopt);

  /// The completion form: returns at once and never blocks on the network, a lock or the pool
  /// wait. done gets the rows or the Error the blocking form would throw, exactly once, never
  /// inside this call, on the executor if one was given, else on the pool's callback thread
  /// (never the I/O thread), within the blocking form's bound. After close(), done gets
  /// Error(ShutDown): on the executor or callback thread while they still run, else inline.
  /// Thread-safe.
  void execute(std::string sql, PgParams params, Completion<Result<PgResult>> done,
               std::optional<Milliseconds> timeout = std::nullopt) noexcept;

  /// Fails waiting and running statements with Error(ShutDown), closes every connection, and makes
  /// later calls fail with Error(ShutDown). Thread-safe, idempotent; waits only for the I/O thread
  /// to run it (no network wait).
  void close() noexcept;

  /// The pool's connections at one moment.
  struct Stats {
    std::size_t open = 0;      ///< connections that exist: connecting, in use or idle
    std::size_t idle = 0;      ///< connected, no statement in flight
    std::size_t inUse = 0;     ///< with statements in flight
    std::size_t capacity = 0;  ///< options.poolSize
  };
  /// Thread-safe, lock-free.
  Stats stats() const;

 private:
  friend struct detail::PgPoolAccess;
  explicit PgPool(std::unique_ptr<detail::PgPoolState> state);
  std::unique_ptr<detail::PgPoolState> state_;
};

}  // namespace streamlock
