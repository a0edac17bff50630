// A program outside streamlock that uses its installed (or add_subdirectory'd) package.
#include <streamlock/streamlock.h>

#include <cstdio>

int main() {
  std::printf("streamlock %s\n", STREAMLOCK_VERSION_STRING);

  // No Redis and no PostgreSQL configured: the Client opens no connection, and a lookup can only
  // answer from the local pending map, so its status is unknown.
  streamlock::Client client{streamlock::Options{}};
  const streamlock::ActiveStreams active = client.getActiveChatStreamIds({"a"});
  if (active.status != streamlock::LookupStatus::Unknown) {
    std::fprintf(stderr, "expected status unknown, got %s\n", streamlock::toString(active.status));
    return 1;
  }
  std::printf("lookup status: %s\n", streamlock::toString(active.status));
  return 0;
}
