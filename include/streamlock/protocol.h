#pragma once

/// @file
/// The streamlock protocol as pure functions: lock keys and commands, the writer's timing rules,
/// the batched lookup and the reading of its answer, stale-marker extraction, and the repair and
/// marker statements. Nothing here does I/O, blocks, allocates a thread or keeps state, so a host
/// that already has its own Redis and PostgreSQL clients can follow the protocol with this header
/// alone (the reconciliation table itself is reconcileMarkers() in reconcile.h). Every function is
/// thread-safe.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "streamlock/options.h"
#include "streamlock/pending_streams.h"
#include "streamlock/reconcile.h"

namespace streamlock::protocol {

/// One Redis command in argv form (send it with your client's argv API, never as a format string).
using Command = std::vector<std::string>;

/// Text parameters of a SQL statement; nullopt binds NULL. The same type as PgParams.
using SqlParams = std::vector<std::optional<std::string>>;

/// A parameterised SQL statement: `sql` with `$1`, `$2`... and their values.
struct Statement {
  std::string sql;    ///< the statement text; identifiers are quoted, values are never spliced in
  SqlParams params;   ///< the values of $1, $2...
};

// --- The lock -----------------------------------------------------------------------------------

/// The Redis key of a chat's lock: keyPrefix followed by the chat id.
std::string lockKey(std::string_view keyPrefix, std::string_view chatId);

/// Compare-and-expire (KEYS[1] the lock key, ARGV[1] the stream id, ARGV[2] the TTL in seconds):
/// extends the TTL only while the key holds the stream id. Returns 1 when extended, 0 when the key
/// is gone or held by another stream (ownership lost).
extern const char* const kExtendScript;

/// Compare-and-delete (KEYS[1] the lock key, ARGV[1] the stream id): deletes the key only while
/// it holds the stream id. Returns 1 when deleted, 0 otherwise.
extern const char* const kReleaseScript;

/// `SET key streamId NX EX ttl`: the reply is the status OK when acquired, nil when another stream
/// holds the lock.
Command acquireCommand(std::string_view key, std::string_view streamId, Seconds ttl);

/// `EVAL kExtendScript 1 key streamId ttl` (a client may send it as EVALSHA of the script's SHA1
/// and fall back to EVAL on NOSCRIPT).
Command extendCommand(std::string_view key, std::string_view streamId, Seconds ttl);

/// `EVAL kReleaseScript 1 key streamId`.
Command releaseCommand(std::string_view key, std::string_view streamId);

/// The writer's timing rules, from the lock options and the command timeout.
struct WriterTiming {
  /// How often a held lock is extended: LockOptions::heartbeatInterval, or ttl / 3 when zero.
  std::chrono::milliseconds heartbeatInterval;
  /// How soon a failed extend is retried: min(1 s, heartbeatInterval / 4).
  std::chrono::milliseconds retryDelay;
  /// How long after the last successful extend (or the acquire) was *sent* the lock is certainly
  /// still held: ttl - max(commandTimeout, 500 ms). Past it without a newer successful extend,
  /// ownership is lost and the writer must stop producing, before the lock can have expired.
  std::chrono::milliseconds ownershipWindow;
};

/// The timing of a writer with these options (assumed valid: see Client's constructor).
WriterTiming writerTiming(const LockOptions& lock, std::chrono::milliseconds commandTimeout);

// --- The lookup ---------------------------------------------------------------------------------

/// The chats a reader looks up: those candidates with a persisted marker (null and empty markers
/// are inactive whatever Redis says, so they are never asked about), in candidate order.
std::vector<std::string> chatsToLookUp(const std::vector<MarkerCandidate>& candidates);

/// One batched lookup: the lock keys of the chats, as MGETs of at most `chunk` keys each, all sent
/// in one pipeline (one round trip).
struct LookupPlan {
  std::vector<std::string> chatIds;  ///< the chats, in order
  std::vector<std::string> keys;     ///< their lock keys, same order
  std::vector<Command> commands;     ///< MGETs covering keys in order, at most chunk keys each
};

/// The plan for these chats (chunk 0 is taken as 1).
LookupPlan planLookup(const std::vector<std::string>& chatIds, std::string_view keyPrefix, std::size_t chunk = 1000);

/// The verified answer from the values the MGETs returned, concatenated in key order (nullopt for
/// a missing key; an empty value counts as no owner). Throws std::invalid_argument when the number
/// of values differs from the number of keys (then the answer is unknown, never partly verified).
ActiveStreams verifiedOwners(const LookupPlan& plan, const std::vector<std::optional<std::string>>& values);

/// The unknown answer: the local owners (chat -> stream of this process's pending streams) of the
/// planned chats. Used when Redis is not configured, failing, or behind an open breaker.
ActiveStreams unknownOwners(const LookupPlan& plan, const PendingStreams& pending);

// --- Reconciliation and repair --------------------------------------------------------------------

/// The verified-stale markers of a reconciliation (those with staleMarker set), for the repair.
std::vector<StaleMarker> staleMarkers(const std::vector<ReconciledMarker>& reconciled);

/// The query that finds the types of the id and marker columns (run once per table: the repair
/// casts its arrays to them). Its rows are (column name, type as format_type() prints it).
Statement columnTypesQuery(const RepairOptions& repair);

/// The repair: a compare-and-clear of every stale marker in one statement, writing only the marker
/// column: `UPDATE t SET marker = NULL FROM unnest($1::text[], $2::text[]) AS stale(id, marker)
/// WHERE t.id = stale.id::<idType> AND t.marker = stale.marker::<markerType>`. A marker that
/// changed since it was read (a stream that started meanwhile) is left alone. idType and markerType
/// come from columnTypesQuery(). Its parameters are repairParameters().
std::string repairSql(const RepairOptions& repair, std::string_view idType, std::string_view markerType);

/// The two text[] literals ($1 the chat ids, $2 the markers read) of the repair statement.
SqlParams repairParameters(const std::vector<StaleMarker>& stale);

/// Writer step 2: `UPDATE t SET marker = $2 WHERE id = $1`.
Statement writeMarkerStatement(const RepairOptions& table, std::string_view chatId, std::string_view streamId);

/// Writer step 4, compare-and-clear: `UPDATE t SET marker = NULL WHERE id = $1 AND marker = $2`.
Statement clearMarkerStatement(const RepairOptions& table, std::string_view chatId, std::string_view streamId);

/// An SQL identifier, double-quoted with embedded quotes doubled.
std::string quoteIdentifier(std::string_view name);

}  // namespace streamlock::protocol
