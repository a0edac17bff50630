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

ReconciledMarker detail::reconcileOne(const MarkerCandidate& candidate, LookupStatus status, std::string&& owner) {
  ReconciledMarker out{candidate.chatId, MarkerState::Inactive, std::nullopt, std::nullopt};
  // A null marker is inactive whatever the lock says: a lock without a marker is a stream
  // tearing down (marker cleared, lock not yet released).
  if (!candidate.marker || candidate.marker->empty()) return out;

  const std::string& marker = *candidate.marker;
  if (status == LookupStatus::Verified) {
    if (!owner.empty()) {
      out.state = MarkerState::Active;
      out.streamId = std::move(owner);  // the lock owner wins over a stale persisted value
    } else {
      out.staleMarker = marker;
    }
    return out;
  }
  // Unknown: only a local owner equal to the marker proves the stream alive.
  out.state = owner == marker ? MarkerState::Active : MarkerState::Unknown;
  out.streamId = marker;
  return out;
}

std::vector<ReconciledMarker> reconcileMarkers(const std::vector<MarkerCandidate>& candidates,
                                               const ActiveStreams& active) {
  std::vector<ReconciledMarker> out;
  out.reserve(candidates.size());
  for (const auto& candidate : candidates) {
    auto owner = active.owners.find(candidate.chatId);
    out.push_back(detail::reconcileOne(candidate, active.status,
                                       owner == active.owners.end() ? std::string() : std::string(owner->second)));
  }
  return out;
}

}  // namespace streamlock
