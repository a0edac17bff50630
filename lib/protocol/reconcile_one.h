#pragma once

#include <string>
#include <vector>

#include "streamlock/reconcile.h"

namespace streamlock::detail {

// One row of the reconciliation table, appended to out (built in place: a batch of a thousand
// chats makes a thousand of them). owner is the lock owner (verified) or the local owner
// (unknown), empty for none; it is moved into the result when it becomes the stream id.
void reconcileOne(const MarkerCandidate& candidate, LookupStatus status, std::string&& owner,
                  std::vector<ReconciledMarker>& out);

}  // namespace streamlock::detail
