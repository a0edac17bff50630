// The tile page: served self-contained at GET /, and rendered by headless Chromium with an active
// tile and an idle tile that look different.

#include <cstdlib>
#include <filesystem>
#include <regex>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;

namespace {

std::string chromiumBinary() {
  const char* configured = std::getenv("STREAMLOCK_TEST_CHROMIUM");
  if (configured != nullptr && *configured != '\0') return configured;
  for (const char* candidate : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  throw std::runtime_error("Chromium not found: install Debian's chromium or set STREAMLOCK_TEST_CHROMIUM");
}

// The DOM of `url` after its scripts ran for a while of virtual time.
std::string dumpDom(const std::string& url) {
  const auto profile = std::filesystem::temp_directory_path() / ("mothership-chromium-" + std::to_string(freePort()));
  std::filesystem::create_directories(profile);
  Subprocess chromium({chromiumBinary(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                       "--disable-background-networking", "--disable-component-update", "--disable-sync",
                       "--disable-quic", "--disable-dev-shm-usage", "--user-data-dir=" + profile.string(),
                       "--virtual-time-budget=5000", "--dump-dom", url});
  const auto dom = chromium.readAll(std::chrono::seconds{120});
  chromium.wait(std::chrono::seconds{30});
  std::error_code ignored;
  std::filesystem::remove_all(profile, ignored);
  return dom;
}

// The data-state of the tile of chatId in a dumped DOM, or "" when there is no such tile.
std::string tileState(const std::string& dom, const std::string& chatId) {
  const std::regex tile("<article class=\"tile (\\w+)\" data-state=\"(\\w+)\" data-chat-id=\"" + chatId + "\"");
  std::smatch match;
  if (!std::regex_search(dom, match, tile)) return "";
  return match[1] == match[2] ? std::string(match[2]) : "inconsistent";
}

}  // namespace

TEST_CASE("GET / serves the self-contained tile page", "[server][page]") {
  Server server;
  const auto page = server.get("/");
  REQUIRE(page.status == 200);
  CHECK(page.headers.find("Content-Type")->second.find("text/html") == 0);
  CHECK(page.body.find("<!doctype html>") == 0);
  CHECK(page.body.find("/api/mothership/chats") != std::string::npos);
  CHECK(page.body.find("generating") != std::string::npos);
  // No external assets.
  CHECK(page.body.find("src=\"http") == std::string::npos);
  CHECK(page.body.find("href=\"http") == std::string::npos);
}

TEST_CASE("headless Chromium shows an active tile and an idle tile differently", "[server][page][chromium]") {
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  Redis redis(requireEnv("STREAMLOCK_TEST_REDIS_URL"));
  const auto caller = newCaller(seed);
  const auto active = seed.chat(caller.userId, caller.workspaceId, "Generating a reply");
  const auto idle = seed.chat(caller.userId, caller.workspaceId, "Quiet chat");
  seed.setMarker(active, "stream-on-page");
  redis.setLock(active, "stream-on-page");

  const auto dom = dumpDom("http://127.0.0.1:" + std::to_string(server.port()) + "/#token=" + caller.token +
                           "&workspaceId=" + caller.workspaceId);
  redis.deleteLock(active);
  INFO(dom.substr(0, 4000));
  CHECK(tileState(dom, active) == "active");
  CHECK(tileState(dom, idle) == "idle");
  CHECK(dom.find("generating\u2026") != std::string::npos);
}
