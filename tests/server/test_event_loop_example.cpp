// examples/event_loop: the writer protocol and a reader driven from one host loop thread with the
// completion API. Run as a user would run it, against the servers tests/run.sh starts.

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;

TEST_CASE("event_loop_stream runs the writer protocol from one loop thread and leaves nothing behind",
          "[server][example]") {
  const Server server(sharedRedisFlags());  // creates the schema
  Sql& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const Caller caller = newCaller(seed);
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);

  Subprocess example({eventLoopStreamBinary(), "--chat-id", chatId, "--stream-id", "loop-stream-1", "--duration-s",
                      "2", "--database-url", TestDatabase::get().conninfo(), "--redis-url",
                      requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  // While it produces, the chat is active through the HTTP API too.
  const bool activeSeen = eventually([&] {
    return server.get("/api/mothership/chats/" + chatId, caller.token).json()["chat"]["activeStreamId"] ==
           "loop-stream-1";
  });
  const auto code = example.wait(std::chrono::seconds{60});
  const std::string output = example.readAll(std::chrono::seconds{5});
  INFO(output << example.stderrText());

  CHECK(code == std::optional<int>(0));
  CHECK(activeSeen);
  CHECK(output.find("stream loop-stream-1 holds the lock") != std::string::npos);
  CHECK(output.find("marker written") != std::string::npos);
  CHECK(output.find("reader: active (verified), stream loop-stream-1") != std::string::npos);
  CHECK(output.find("marker cleared") != std::string::npos);
  CHECK(output.find("lock release: released") != std::string::npos);
  CHECK(seed.marker(chatId) == std::nullopt);
  CHECK(redis.lockOwner(chatId) == std::nullopt);

  // A chat whose lock another stream holds: exit 3, the marker untouched.
  redis.setLock(chatId, "someone-else");
  Subprocess busy({eventLoopStreamBinary(), "--chat-id", chatId, "--duration-s", "1", "--database-url",
                   TestDatabase::get().conninfo(), "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  CHECK(busy.wait(std::chrono::seconds{60}) == std::optional<int>(3));
  CHECK(seed.marker(chatId) == std::nullopt);
  redis.deleteLock(chatId);
}
