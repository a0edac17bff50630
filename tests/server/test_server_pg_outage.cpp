// PostgreSQL stopped under a running server: 500 JSON and 503 health while it is down, the process
// stays up, and the first requests after it is back succeed. Stops the shared cluster: RUN_SERIAL.

#include <cstdlib>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;

namespace {

int runShell(const std::string& command) {
  const int status = std::system(command.c_str());
  return status == -1 ? -1 : WEXITSTATUS(status);
}

// Starts the cluster again however the test ends.
struct PostgresOutage {
  std::string start = requireEnv("STREAMLOCK_TEST_PG_START");
  bool stopped = false;
  void stop() {
    stopped = true;
    if (runShell(requireEnv("STREAMLOCK_TEST_PG_STOP")) != 0) throw std::runtime_error("STREAMLOCK_TEST_PG_STOP failed");
  }
  void restart() {
    if (runShell(start) != 0) throw std::runtime_error("STREAMLOCK_TEST_PG_START failed");
    stopped = false;
  }
  ~PostgresOutage() {
    if (stopped) runShell(start);
  }
};

}  // namespace

TEST_CASE("PostgreSQL stopped: 500 JSON and healthz 503, and the server recovers without a restart",
          "[server][outage]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  const auto listPath = chatListPath(caller.workspaceId);
  const auto chatPath = "/api/mothership/chats/" + chatId;
  REQUIRE(server.get(listPath, caller.token).status == 200);
  REQUIRE(server.get(chatPath, caller.token).status == 200);

  PostgresOutage outage;
  outage.stop();
  const auto list = server.get(listPath, caller.token);
  const auto chat = server.get(chatPath, caller.token);
  const auto health = server.get("/healthz");
  CHECK(list.status == 500);
  CHECK(list.body == R"({"error":"Failed to fetch chats"})");
  CHECK(chat.status == 500);
  CHECK(chat.body == R"({"error":"Failed to fetch chat"})");
  CHECK(health.status == 503);
  CHECK(health.json()["postgres"] == "down");
  CHECK(server.process().running());

  outage.restart();
  CHECK(eventually([&] { return server.get(listPath, caller.token).status == 200; }, std::chrono::seconds{60}));
  CHECK(server.get(chatPath, caller.token).status == 200);
  CHECK(server.get("/healthz").status == 200);
  CHECK(server.process().running());
}
