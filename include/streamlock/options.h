#pragma once

/// @file
/// Every setting of a Client, with its unit and default.

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "streamlock/log.h"

namespace streamlock {

/// Durations of options and deadlines.
using Milliseconds = std::chrono::milliseconds;
/// Whole seconds, for the lock TTL (Redis' EX).
using Seconds = std::chrono::seconds;

/// Redis: where the locks are, the pool, and the deadlines.
struct RedisOptions {
  /// redis://[user:password@]host[:port][/db]. Empty: Redis is not configured, every lookup
  /// is unknown and locks live in the process-local pending map only.
  std::string url;
  /// Most connections open at once; further callers wait for one to be returned.
  std::size_t poolSize = 8;
  /// Opening one connection, including AUTH and SELECT.
  Milliseconds connectTimeout{250};
  /// One command or pipeline of the writer side (acquire, heartbeat, release).
  Milliseconds commandTimeout{1000};
  /// The whole read-side lookup: waiting for a connection, connecting and every MGET.
  Milliseconds lookupDeadline{250};
  /// Keys per MGET; a larger batch is split into several MGETs sent as one pipeline.
  std::size_t mgetChunkSize = 1000;
};

/// PostgreSQL: the markers' database (repair, writeMarker/clearMarker, Client::postgres()).
struct PostgresOptions {
  /// A libpq conninfo string or URI. Empty: no database; repair is disabled.
  std::string conninfo;
  /// Most connections open at once; further callers wait up to acquireTimeout for one.
  std::size_t poolSize = 8;
  /// Sub-second connect deadlines are honoured (libpq's own connect_timeout is not used).
  Milliseconds connectTimeout{2000};
  /// Client-side deadline of a statement when the caller gives none; on expiry its connection is
  /// dropped. This also catches a hung server, which server-side timeouts cannot.
  Milliseconds statementTimeout{5000};
  /// Longest wait for a pooled connection when the caller gives no deadline.
  Milliseconds acquireTimeout{2000};
  /// Prepare each distinct statement once per connection (PQprepare) and then execute it.
  bool prepareStatements = true;
  /// Server settings applied to every session of the pool at connect, as libpq's
  /// options="-c name=value", appended to any options the conninfo already has.
  std::vector<std::pair<std::string, std::string>> settings;
};

/// The stream locks: their keys, their TTL and the heartbeat.
struct LockOptions {
  /// Lock key = keyPrefix + chatId. The default is shared with the original system.
  std::string keyPrefix = "copilot:chat-stream-lock:";
  /// Lock TTL (SET NX EX); whole seconds, at least 1.
  Seconds ttl{60};
  /// Heartbeat interval; zero means ttl / 3.
  Milliseconds heartbeatInterval{0};
  /// Pause between attempts while acquire waits for the previous holder.
  Milliseconds acquirePollInterval{50};
};

/// The Redis circuit breaker of the read path.
struct BreakerOptions {
  /// Consecutive failed lookups that open the breaker; zero disables it.
  unsigned failureThreshold = 3;
  /// How long an open breaker answers unknown without asking Redis before it lets one probe.
  Milliseconds coolDown{1000};
};

/// Where the markers are and how repairs run. Identifiers are quoted by the library; the
/// defaults match the demo schema.
struct RepairOptions {
  /// The table of the chats (may be schema-qualified as one identifier, e.g. "copilot_chats").
  std::string table = "copilot_chats";
  /// Its primary key column, compared with MarkerCandidate::chatId.
  std::string idColumn = "id";
  /// Its nullable active-stream marker column, the only column a repair writes.
  std::string markerColumn = "conversation_id";
  /// lock_timeout of the repair sessions: a repair blocked by another transaction's row lock gives
  /// up after this, and a later read retries it.
  Milliseconds lockTimeout{100};
  /// statement_timeout of the repair sessions, for very large batches (clearing 5,000 markers
  /// takes about 0.1 s); the client stops waiting shortly after it and drops the connection.
  Milliseconds statementTimeout{1000};
  /// Connections of the repair pool, separate from the main pool because of those settings.
  std::size_t poolSize = 2;
};

/// Everything a Client is configured with; the defaults need only redis.url and
/// postgres.conninfo (either may stay empty).
struct Options {
  RedisOptions redis;        ///< the locks' Redis
  PostgresOptions postgres;  ///< the markers' PostgreSQL
  LockOptions lock;          ///< the lock keys and their TTL
  BreakerOptions breaker;    ///< the read path's circuit breaker
  RepairOptions repair;      ///< the markers' table and the repair sessions
  /// Where the library logs; empty means logToStderr.
  Logger logger;
};

}  // namespace streamlock
