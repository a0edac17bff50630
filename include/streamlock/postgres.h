#pragma once

/// @file
/// PgPool, the bounded PostgreSQL pool of a Client, and PgResult, the rows of a statement.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "streamlock/log.h"
#include "streamlock/options.h"

struct pg_result;  // libpq's PGresult, kept out of the public headers

namespace streamlock {

namespace detail {
struct PgResultDeleter {
  void operator()(pg_result* result) const noexcept;
};
class PgPoolState;
}  // namespace detail

/// Text parameters of a statement; nullopt binds SQL NULL.
using PgParams = std::vector<std::optional<std::string>>;

/// The rows of one statement, in text format. Move-only; cheap to move.
class PgResult {
 public:
  /// No rows, no columns.
  PgResult() = default;
  /// Takes ownership of a libpq result (PQclear on destruction).
  explicit PgResult(pg_result* result);

  /// Number of rows.
  int rows() const noexcept;
  /// Number of columns.
  int columns() const noexcept;
  /// Column index by name, or -1.
  int column(std::string_view name) const noexcept;
  /// Whether a value is SQL NULL.
  bool isNull(int row, int column) const noexcept;
  /// The text of a value; empty for NULL. Valid while this PgResult lives.
  std::string_view value(int row, int column) const noexcept;
  /// The text of a value, nullopt for NULL.
  std::optional<std::string> optional(int row, int column) const;
  /// Rows touched by INSERT/UPDATE/DELETE.
  std::uint64_t affectedRows() const noexcept;

 private:
  std::unique_ptr<pg_result, detail::PgResultDeleter> result_;
};

/// A bounded, thread-safe pool of libpq connections. Connections open lazily, with a
/// sub-second-capable connect deadline; a connection that failed (I/O error, timeout, server
/// restart) is discarded and a fresh one is opened on the next use.
class PgPool {
 public:
  /// Throws Error(InvalidArgument) when options.conninfo does not parse. Connects lazily.
  PgPool(PostgresOptions options, Logger logger);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  /// Runs one parameterised statement and returns its rows. Thread-safe.
  /// A pooled connection found broken on use (e.g. after a server restart) is replaced and the
  /// statement sent once more, so statements must be safe to repeat.
  /// Blocks at most acquireTimeout + 2 x (connectTimeout + timeout); timeout defaults to
  /// options.statementTimeout. On expiry the connection is dropped (which ends the statement once
  /// the server notices) and Error(Timeout) thrown; use server settings for a server-side bound.
  /// Throws Error: InvalidArgument (a parameter holding a NUL byte, which text cannot carry),
  /// PoolExhausted, ConnectFailed, Timeout, ConnectionLost, ServerError (with the SQLSTATE), ShutDown.
  PgResult execute(std::string_view sql, const PgParams& params = {},
                   std::optional<Milliseconds> timeout = std::nullopt);

  /// Closes idle connections and makes later calls throw Error(ShutDown). Thread-safe.
  void close() noexcept;

  /// The pool's connections at one moment.
  struct Stats {
    std::size_t open = 0;  ///< connections that exist, leased or idle
    std::size_t idle = 0;  ///< of which waiting to be leased
  };
  /// The connections now. Thread-safe; a short mutex hold.
  Stats stats() const;

 private:
  std::unique_ptr<detail::PgPoolState> state_;
};

}  // namespace streamlock
