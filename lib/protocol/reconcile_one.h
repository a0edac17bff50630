#pragma once

#include <string>

#include "streamlock/reconcile.h"

namespace streamlock::detail {

// One row of the reconciliation table. owner is the lock owner (verified) or the local owner
// (unknown), empty for none; it is moved into the result when it becomes the stream id.
ReconciledMarker reconcileOne(const MarkerCandidate& candidate, LookupStatus status, std::string&& owner);

}  // namespace streamlock::detail
