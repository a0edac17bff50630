// [case 7] of writer_lifecycle: the control, must compile with the same flags and include
// directories as the snippets that must not (so that a broken include path cannot pass for a
// [[nodiscard]]): every result is used.
#include <streamlock/client.h>

#include <string>
#include <vector>

bool writer(streamlock::Client& client, const streamlock::OwnershipLostCallback& onLost) {
  auto lock = client.acquireStreamLock("c", "s");
  if (!lock) return false;
  auto heartbeat = lock->startHeartbeat(onLost);
  return heartbeat.running();
}

bool reader(streamlock::Client& client, const std::vector<std::string>& ids) {
  const auto active = client.getActiveChatStreamIds(ids);
  return active.status == streamlock::LookupStatus::Verified;
}
