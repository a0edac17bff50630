#pragma once

// What lib/ (the Client) uses of a PgPool beyond its public API: a pool wired to the Client's
// I/O thread and delivery, and the asynchronous entry with explicit limits.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "io/loop.h"
#include "pg/pool.h"
#include "streamlock/postgres.h"

namespace streamlock::detail {

class Delivery;

// What a Client's pool shares with the Client.
struct PgPoolWiring {
  Loop& loop;                          // the Client's I/O thread; outlives the pool
  std::shared_ptr<Delivery> delivery;  // where the public completion form's completions run
  PostgresOptions options;
  Logger logger;
  std::size_t maxInFlight = 0;         // statements pipelined per connection; 0: options.pipelineDepth
  Milliseconds stallAfter{100};        // see PgPoolConfig
  // The host demotions shared by the pools of one Client (see PgTargets::Demotions); null: own.
  std::shared_ptr<std::vector<Deadline>> demotions = nullptr;
};

struct PgPoolAccess {
  // A PgPool on wiring.loop and wiring.delivery (no thread of its own). Throws as the public
  // constructor does. Destroy it from a thread other than the loop thread while the loop runs, or
  // after Loop::stop() returned: it closes the core on the loop thread first.
  static std::unique_ptr<PgPool> make(PgPoolWiring wiring);

  // The limits of a call made now: acquireBy = now + acquireTimeout, timeout (else
  // statementTimeout), notAfter as given (Deadline::max(): none). Thread-safe.
  static StatementLimits limits(const PgPool& pool, std::optional<Milliseconds> timeout,
                                Deadline notAfter = Deadline::max()) noexcept;
  // The limits of a call made now under PgPool's documented bound: notAfter = now + acquireTimeout
  // + connectTimeout + the statement's timeout, a retry included. Thread-safe.
  static StatementLimits callLimits(const PgPool& pool, std::optional<Milliseconds> timeout) noexcept;

  // Thread-safe: runs the statement under these limits; done runs on the loop thread, exactly once,
  // never inside this call -- except when the loop no longer runs (stopped, or the pool closed
  // and destroyed), where done gets Error(ShutDown) on the thread that finds out. Never throws.
  static void execute(PgPool& pool, std::string sql, PgParams params, StatementLimits limits, PgDone done) noexcept;

  // The core, for code already on the loop thread (PgPoolCore::execute, stats, close...).
  static PgPoolCore& core(PgPool& pool) noexcept;

  // fork() child: frees the connections without sending anything and makes the pool inert (its
  // destructor then only frees memory). For a wired pool the Loop and Delivery are the Client's to
  // abandon. Also done by the destructor by itself when it finds another pid.
  static void abandonAfterFork(PgPool& pool) noexcept;
};

}  // namespace streamlock::detail
