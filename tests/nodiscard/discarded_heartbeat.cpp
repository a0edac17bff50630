// [case 7] of writer_lifecycle: must NOT compile. Dropping the Heartbeat stops it at once (its
// destructor stops it), so the lock is never extended: startHeartbeat's result is [[nodiscard]].
#include <streamlock/client.h>

void writer(streamlock::Client& client, const streamlock::OwnershipLostCallback& onLost) {
  auto lock = client.acquireStreamLock("c", "s");
  if (lock) lock->startHeartbeat(onLost);  // discarded
}
