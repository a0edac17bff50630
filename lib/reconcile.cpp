#include "streamlock/reconcile.h"

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

namespace {

const std::string* ownerOf(const ActiveStreams& active, const std::string& chatId) {
  auto it = active.owners.find(chatId);
  if (it == active.owners.end() || it->second.empty()) return nullptr;
  return &it->second;
}

ReconciledMarker reconcileOne(const MarkerCandidate& candidate, const ActiveStreams& active) {
  ReconciledMarker out;
  out.chatId = candidate.chatId;
  // A null marker is inactive whatever the lock says: a lock without a marker is a stream
  // tearing down (marker cleared, lock not yet released).
  if (!candidate.marker || candidate.marker->empty()) return out;

  const std::string& marker = *candidate.marker;
  const std::string* owner = ownerOf(active, candidate.chatId);
  if (active.status == LookupStatus::Verified) {
    if (owner) {
      out.state = MarkerState::Active;
      out.streamId = *owner;  // the lock owner wins over a stale persisted value
    } else {
      out.staleMarker = marker;
    }
    return out;
  }
  // Unknown: only a local owner equal to the marker proves the stream alive.
  out.streamId = marker;
  out.state = (owner && *owner == marker) ? MarkerState::Active : MarkerState::Unknown;
  return out;
}

}  // namespace

std::vector<ReconciledMarker> reconcileMarkers(const std::vector<MarkerCandidate>& candidates,
                                               const ActiveStreams& active) {
  std::vector<ReconciledMarker> out;
  out.reserve(candidates.size());
  for (const auto& candidate : candidates) out.push_back(reconcileOne(candidate, active));
  return out;
}

}  // namespace streamlock
