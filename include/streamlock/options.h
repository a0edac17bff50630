#pragma once

/// @file
/// Every setting of a Client, with its unit and default, and the limits the constructor checks.

#include <chrono>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "streamlock/completion.h"
#include "streamlock/log.h"

namespace streamlock {

/// Durations of options and deadlines.
using Milliseconds = std::chrono::milliseconds;
/// Whole seconds, for the lock TTL (Redis' EX).
using Seconds = std::chrono::seconds;

/// TLS to Redis, used by the rediss:// URL forms.
struct RedisTlsOptions {
  /// PEM file of the CA certificates that may sign the server's certificate; empty: the system's
  /// trust store.
  std::string caFile;
  /// Client certificate chain (PEM), for servers that require one; with keyFile.
  std::string certFile;
  /// The client certificate's private key (PEM, unencrypted); with certFile.
  std::string keyFile;
  /// INSECURE: accept any server certificate and host name. The only way to switch verification off.
  bool insecureSkipVerify = false;
};

/// Redis: where the locks are, and the deadlines.
struct RedisOptions {
  /// Where the locks are; every form accepts user:password@ (percent-decoded, never logged):
  ///   - redis://host[:port][/db]: one server; rediss://... the same over TLS;
  ///   - redis-sentinel://h1[:p1][,h2[:p2]...][/db]?master=NAME: the master the sentinels name;
  ///   - redis-cluster://h1[:p1][,h2[:p2]...]: a Redis Cluster, from any of these seed nodes;
  ///   - rediss-sentinel://..., rediss-cluster://...: the same over TLS, sentinels included.
  ///
  /// Empty: Redis is not configured, every lookup is unknown and locks live in the process-local
  /// pending map only.
  std::string url;
  /// Kept for source compatibility; unused since 0.2: one connection per Redis server serves every
  /// caller of the Client, its commands pipelined, so no caller ever waits for a free connection.
  std::size_t poolSize = 8;
  /// Opening one connection: TCP to each address in turn, the TLS handshake, AUTH and SELECT. Not
  /// the lookup of a host name, which the system resolver does (blocking getaddrinfo, on the I/O
  /// thread) before: a DNS server that does not answer delays every socket of the Client. Give IP
  /// addresses where that matters.
  Milliseconds connectTimeout{250};
  /// One command or pipeline of the writer side (acquire, heartbeat, release), connecting included.
  Milliseconds commandTimeout{1000};
  /// The whole read-side lookup: connecting if needed and every MGET.
  Milliseconds lookupDeadline{250};
  /// Keys per MGET; a larger batch is split into several MGETs sent as one pipeline.
  std::size_t mgetChunkSize = 1000;
  /// Certificates for the rediss forms.
  RedisTlsOptions tls;
};

/// PostgreSQL: the markers' database (repair, writeMarker/clearMarker, Client::postgres()).
struct PostgresOptions {
  /// A libpq conninfo string or URI. Empty: no database; repair is disabled. libpq resolves a host
  /// name with a blocking getaddrinfo on the I/O thread at each connect (see RedisOptions::connectTimeout).
  std::string conninfo;
  /// Most connections open at once; further callers wait up to acquireTimeout for one.
  std::size_t poolSize = 8;
  /// Opening one connection, all hosts of a multi-host conninfo included. Sub-second deadlines are
  /// honoured (libpq's own connect_timeout is not used).
  Milliseconds connectTimeout{2000};
  /// Multi-host conninfo (host=a,b port=p,q, or postgresql://a:p,b:q/db): the hosts are tried one at
  /// a time, in order, each attempt bounded by this (the last host left to try gets the rest of
  /// connectTimeout). A host whose attempt timed out is tried last for the next 30 s, so a first
  /// host that accepts TCP and never answers costs one attempt, not every connect.
  Milliseconds hostAttemptTimeout{500};
  /// Client-side deadline of a statement when the caller gives none; on expiry its connection is
  /// dropped. This also catches a hung server, which server-side timeouts cannot.
  Milliseconds statementTimeout{5000};
  /// Longest wait for a pooled connection when the caller gives no deadline.
  Milliseconds acquireTimeout{2000};
  /// Statements in flight at once on one connection (libpq pipeline mode), from any callers: with
  /// more than 1, concurrent statements share a few connections and their round trips. A
  /// connection whose oldest statement has run for over 100 ms takes no more, so a statement stuck
  /// on a lock delays at most those already behind it (they are sent again elsewhere if it times
  /// out). 1: one statement per connection at a time.
  std::size_t pipelineDepth = 1;
  /// Prepare each distinct statement once per connection (PQprepare) and then execute it (at most
  /// 256 distinct SQL texts per connection; more run unprepared).
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
  /// Replicas that must have the lock before acquire succeeds (WAIT n after the SET, within
  /// redis.commandTimeout), so that a failover right after cannot lose a fresh lock; 0: no WAIT.
  /// An acquire whose lock reached fewer replicas deletes it again and fails with Error(Timeout).
  unsigned waitReplicas = 0;
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
  /// The table of the chats (one identifier, e.g. "copilot_chats").
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

/// The longest duration an option may have (24 hours). Every option is checked by Client's
/// constructor, which throws Error(InvalidArgument) naming the first bad one (e.g.
/// "redis.lookupDeadline must be positive (got 0 ms)"). Durations must be positive (zero only where
/// its comment says what zero means) and at most kMaxDuration, so that no deadline computed from
/// them can overflow; the heartbeat interval must be shorter than
/// ttl - max(redis.commandTimeout, 500 ms), the time a lock is certainly still held after an extend.
constexpr Milliseconds kMaxDuration{24LL * 60 * 60 * 1000};

/// Everything a Client is configured with; the defaults need only redis.url and
/// postgres.conninfo (either may stay empty).
struct Options {
  RedisOptions redis;        ///< the locks' Redis
  PostgresOptions postgres;  ///< the markers' PostgreSQL
  LockOptions lock;          ///< the lock keys, their TTL and the heartbeat
  BreakerOptions breaker;    ///< the read path's circuit breaker
  RepairOptions repair;      ///< the markers' table and the repair sessions
  /// Where the library logs; empty means logToStderr. Called from any of the library's threads.
  Logger logger;
  /// Where completions and ownership-lost callbacks run (see completion.h). Empty: on one library
  /// callback thread, started on first use.
  Executor executor;
};

}  // namespace streamlock
