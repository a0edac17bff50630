#pragma once

/// @file
/// The reader's types and the reconciliation table as a pure function (reconcileMarkers).

#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace streamlock {

/// Verified: Redis answered for the whole batch. Unknown: it did not (not configured, unreachable,
/// timed out, error reply, breaker open) and the owners come from the local pending map only.
enum class LookupStatus {
  Verified,  ///< Redis answered for every chat of the batch: a missing lock is authoritative
  Unknown,   ///< Redis did not: owners from the local pending map only
};

/// "verified" or "unknown".
const char* toString(LookupStatus status) noexcept;

/// The answer of getActiveChatStreamIds: the lock owner of each chat that has one.
struct ActiveStreams {
  LookupStatus status = LookupStatus::Verified;  ///< whether Redis answered
  std::unordered_map<std::string, std::string> owners;  ///< chatId -> streamId
};

/// A chat as the database showed it: its id and its persisted active-stream marker.
struct MarkerCandidate {
  std::string chatId;                 ///< the chat's id, as the lock key and the repair use it
  std::optional<std::string> marker;  ///< null (or empty) when no stream is recorded
};

/// What the reader may conclude about a chat's stream.
enum class MarkerState {
  Inactive,  ///< no stream runs: no marker, or a verified-stale one
  Active,    ///< a stream runs: its lock is held (or, unknown, held by this process)
  Unknown,   ///< Redis could not say: the marker is shown as stored
};

/// "inactive", "active" or "unknown".
const char* toString(MarkerState state) noexcept;

/// The reconciled answer for one MarkerCandidate.
struct ReconciledMarker {
  std::string chatId;                         ///< the candidate's chat
  MarkerState state = MarkerState::Inactive;  ///< the table's result
  /// What the reader should show: the owner, the preserved marker, or null.
  std::optional<std::string> streamId;
  /// Verified stale: a persisted marker whose lock Redis says is gone. staleMarker holds the value
  /// that was read, for the compare-and-clear repair.
  std::optional<std::string> staleMarker;
};

/// The reconciliation table of the contract as a pure function, one result per candidate in
/// input order. Thread-safe; never blocks.
///
/// | marker | status   | owner                       | result                          |
/// |--------|----------|-----------------------------|---------------------------------|
/// | null   | any      | any                         | inactive, null                  |
/// | set    | verified | present                     | active, owner                   |
/// | set    | verified | absent                      | inactive, null (stale marker)   |
/// | set    | unknown  | local owner equal to marker | active, marker                  |
/// | set    | unknown  | none or different           | unknown, marker (preserved)     |
std::vector<ReconciledMarker> reconcileMarkers(const std::vector<MarkerCandidate>& candidates,
                                               const ActiveStreams& active);

/// A verified-stale marker to clear with compare-and-clear.
struct StaleMarker {
  std::string chatId;  ///< the chat whose marker to clear
  std::string marker;  ///< the value that was read; a different current value is left alone
};

/// What a repair statement did.
struct RepairResult {
  std::size_t cleared = 0;  ///< rows whose marker still held the read value and was cleared
  bool failed = false;      ///< the statement failed or timed out (logged and counted)
};

/// How reconcileChatStreamMarkers runs.
struct ReconcileOptions {
  /// Clear verified-stale markers in the database before returning (needs PostgreSQL).
  bool repair = false;
};

/// The answer of reconcileChatStreamMarkers.
struct ReconcileResult {
  LookupStatus status = LookupStatus::Verified;  ///< whether Redis answered for the whole batch
  std::vector<ReconciledMarker> markers;         ///< one per candidate, in input order
  RepairResult repair;  ///< what the repair did (nothing cleared without repair or when unknown)
};

}  // namespace streamlock
