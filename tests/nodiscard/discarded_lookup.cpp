// [case 7] of writer_lifecycle: must NOT compile. A lookup whose answer is dropped did nothing
// useful: getActiveChatStreamIds's result is [[nodiscard]].
#include <streamlock/client.h>

#include <string>
#include <vector>

void reader(streamlock::Client& client, const std::vector<std::string>& ids) {
  client.getActiveChatStreamIds(ids);  // discarded
}
