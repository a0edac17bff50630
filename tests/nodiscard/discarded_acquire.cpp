// [case 7] of writer_lifecycle: must NOT compile. Dropping the acquired lock releases it at once,
// and dropping nullopt ignores that the chat is busy: acquireStreamLock's result is [[nodiscard]].
#include <streamlock/client.h>

void writer(streamlock::Client& client) {
  client.acquireStreamLock("c", "s");  // discarded
}
