#include "streamlock/reconcile.h"

#include "protocol/reconcile_one.h"

namespace streamlock {

const char* toString(LookupStatus status) noexcept {
  return status == LookupStatus::Verified ? "verified" : "unknown";
}

const char* toString(MarkerState state) noexcept {
  switch (state) {
    case MarkerState::Inactive: return "inactive";
    case MarkerState::Active: return "active";
    case MarkerState::Unknown: return "unknown";
  }
  return "?";
}

void detail::reconcileOne(const MarkerCandidate& candidate, LookupStatus status, std::string&& owner,
                          std::vector<ReconciledMarker>& out) {
  ReconciledMarker& row = out.emplace_back();
  row.chatId = candidate.chatId;
  // A null marker is inactive whatever the lock says: a lock without a marker is a stream
  // tearing down (marker cleared, lock not yet released).
  if (!candidate.marker || candidate.marker->empty()) return;

  const std::string& marker = *candidate.marker;
  if (status == LookupStatus::Verified) {
    if (!owner.empty()) {
      row.state = MarkerState::Active;
      row.streamId = std::move(owner);  // the lock owner wins over a stale persisted value
    } else {
      row.staleMarker = marker;
    }
    return;
  }
  // Unknown: only a local owner equal to the marker proves the stream alive.
  row.state = owner == marker ? MarkerState::Active : MarkerState::Unknown;
  row.streamId = marker;
}

std::vector<ReconciledMarker> reconcileMarkers(const std::vector<MarkerCandidate>& candidates,
                                               const ActiveStreams& active) {
  std::vector<ReconciledMarker> out;
  out.reserve(candidates.size());
  for (const auto& candidate : candidates) {
    auto owner = active.owners.find(candidate.chatId);
    detail::reconcileOne(candidate, active.status,
                         owner == active.owners.end() ? std::string() : std::string(owner->second), out);
  }
  return out;
}

}  // namespace streamlock
