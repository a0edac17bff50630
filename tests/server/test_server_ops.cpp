// Operating the demo programs: an address in use refused, the startup checks and their log lines,
// /healthz's three states, JSON log lines, STREAMLOCK_* variables, --version, and the library's
// gauges and histograms in /metrics.

#include <signal.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kChats = "/api/mothership/chats";

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) out.push_back(line);
  return out;
}

std::string closedRedisUrl() { return "redis://127.0.0.1:" + std::to_string(freePort()) + "/0"; }

// The environment of a child without the variables that could set its flags from outside.
std::map<std::string, std::optional<std::string>> cleanEnvironment() {
  return {{"DATABASE_URL", std::nullopt}, {"REDIS_URL", std::nullopt}};
}

Response httpGet(int port, const std::string& path, const std::optional<std::string>& token = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(30, 0);
  httplib::Headers headers;
  if (token) headers.emplace("Authorization", "Bearer " + *token);
  Response response;
  if (auto result = client.Get(path.c_str(), headers)) {
    response.status = result->status;
    response.body = result->body;
  }
  return response;
}

// A JSON log line: an object whose first keys are a UTC millisecond timestamp, a level and an event.
void checkJsonLine(const std::string& line) {
  INFO("line: " << line);
  nlohmann::ordered_json json;
  REQUIRE_NOTHROW(json = nlohmann::ordered_json::parse(line));
  REQUIRE(json.is_object());
  REQUIRE(json.size() >= 3);
  auto key = json.begin();
  CHECK(key.key() == "ts");
  REQUIRE(key.value().is_string());
  CHECK(std::regex_match(key.value().get<std::string>(), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  ++key;
  CHECK(key.key() == "level");
  const std::set<std::string> levels{"debug", "info", "warning", "error"};
  CHECK(levels.count(key.value().get<std::string>()) == 1);
  ++key;
  CHECK(key.key() == "event");
  CHECK(key.value().is_string());
}

// The events of JSON lines, in order.
std::vector<std::string> events(const std::vector<std::string>& jsonLines) {
  std::vector<std::string> out;
  for (const auto& line : jsonLines) out.push_back(Json::parse(line)["event"].get<std::string>());
  return out;
}

bool has(const std::vector<std::string>& all, const std::string& one) {
  return std::find(all.begin(), all.end(), one) != all.end();
}

}  // namespace

TEST_CASE("a second server on a port in use exits non-zero at once, naming the address", "[server][ops]") {
  Server first(sharedRedisFlags());
  const auto address = "127.0.0.1:" + std::to_string(first.port());

  const auto start = Clock::now();
  Subprocess second({serverBinary(), "--listen", address, "--database-url", TestDatabase::get().conninfo()},
                    cleanEnvironment());
  const auto code = second.wait(seconds{10});
  const auto elapsed = Clock::now() - start;

  REQUIRE(code.has_value());
  CHECK(*code != 0);
  CHECK(elapsed < seconds{2});
  const auto message = second.stderrText();
  INFO("stderr: " << message);
  CHECK(message.find("address already in use") != std::string::npos);
  CHECK(message.find(address) != std::string::npos);
  CHECK(second.readAll(seconds{1}).find("listening") == std::string::npos);
  // The first server still answers every request: nothing was shared.
  for (int i = 0; i < 5; ++i) CHECK(first.get("/healthz").status == 200);
}

TEST_CASE("healthz has exactly the contract's fields: ok with Redis verified or disabled", "[server][ops]") {
  const std::set<std::string> fields{"status", "postgres", "redis", "breaker"};
  auto keys = [](const Json& json) {
    std::set<std::string> out;
    for (const auto& item : json.items()) out.insert(item.key());
    return out;
  };

  Server verified(sharedRedisFlags());
  const auto withRedis = verified.get("/healthz");
  REQUIRE(withRedis.status == 200);
  CHECK(keys(withRedis.json()) == fields);
  CHECK(withRedis.json()["status"] == "ok");
  CHECK(withRedis.json()["redis"] == "verified");

  Server disabled;
  const auto withoutRedis = disabled.get("/healthz");
  REQUIRE(withoutRedis.status == 200);
  CHECK(keys(withoutRedis.json()) == fields);
  CHECK(withoutRedis.json() ==
        Json{{"status", "ok"}, {"postgres", "up"}, {"redis", "disabled"}, {"breaker", "closed"}});
}

TEST_CASE("Redis unreachable: the startup line names Redis and the failure, healthz is 200 degraded",
          "[server][ops]") {
  const auto redisUrl = closedRedisUrl();
  const auto endpoint = redisUrl.substr(std::string("redis://").size(), redisUrl.rfind('/') - 8);
  Server server({"--redis-url", redisUrl});

  // The startup lines are on stderr before the server listens.
  const auto log = server.process().stderrText();
  INFO("stderr: " << log);
  std::string redisLine;
  for (const auto& line : lines(log)) {
    if (line.find("Redis") != std::string::npos && line.find(endpoint) != std::string::npos) redisLine = line;
  }
  REQUIRE_FALSE(redisLine.empty());
  CHECK(lowercase(redisLine).find("connection refused") != std::string::npos);
  CHECK(log.find("PostgreSQL up") != std::string::npos);

  const auto health = server.get("/healthz");
  CHECK(health.status == 200);
  CHECK(health.json() == Json{{"status", "degraded"}, {"postgres", "up"}, {"redis", "unknown"}, {"breaker", "closed"}});
}

TEST_CASE("Redis up: the startup lines say PostgreSQL up and Redis verified", "[server][ops]") {
  Server server(sharedRedisFlags());
  const auto log = server.process().stderrText();
  INFO("stderr: " << log);
  CHECK(log.find("PostgreSQL up: database " + TestDatabase::get().name()) != std::string::npos);
  CHECK(log.find("Redis verified") != std::string::npos);
}

TEST_CASE("JSON log format: every line of the server is one JSON object, with no token", "[server][ops]") {
  // A refusing Redis: the library logs its failed lookups, through the server's JSON lines.
  Subprocess process({serverBinary(), "--listen", "127.0.0.1:0", "--database-url", TestDatabase::get().conninfo(),
                      "--redis-url", closedRedisUrl(), "--log-format", "json"},
                     cleanEnvironment());
  const auto listening = process.readLine(seconds{30});
  REQUIRE(listening);
  checkJsonLine(*listening);
  const auto started = Json::parse(*listening);
  REQUIRE(started["event"] == "listening");
  const std::string url = started["url"];
  const int port = std::stoi(url.substr(url.rfind(':') + 1));
  Seed seed(TestDatabase::get().sql());  // the tables exist now: the server created them
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  seed.setMarker(chatId, "stream-json");

  CHECK(httpGet(port, kChats + "/" + chatId, caller.token).status == 200);
  CHECK(httpGet(port, chatListPath(caller.workspaceId), caller.token).status == 200);
  CHECK(httpGet(port, kChats + "/" + chatId, "not-a-valid-token").status == 401);
  CHECK(httpGet(port, "/nowhere").status == 404);
  REQUIRE(eventually([&] { return process.stderrText().find("\"route\":\"unmatched\"") != std::string::npos; }));
  process.signal(SIGTERM);
  REQUIRE(process.wait(seconds{15}) == std::optional<int>(0));

  const auto stdoutLines = lines(*listening + "\n" + process.readAll(seconds{5}));
  const auto stderrLines = lines(process.stderrText());
  for (const auto& line : stdoutLines) checkJsonLine(line);
  for (const auto& line : stderrLines) checkJsonLine(line);

  const auto seen = events(stderrLines);
  CHECK(has(seen, "startup_postgres"));
  CHECK(has(seen, "startup_redis"));
  CHECK(has(seen, "access"));
  CHECK(has(seen, "streamlock"));  // the library's logger
  CHECK(has(seen, "stopping"));
  CHECK(has(seen, "stopped"));

  bool sawChatRoute = false;
  for (const auto& line : stderrLines) {
    const auto json = Json::parse(line);
    if (json["event"] == "access" && json["route"] == "/api/mothership/chats/{chatId}" && json["status"] == 200) {
      sawChatRoute = true;
      CHECK(json["method"] == "GET");
      CHECK(json["duration_ms"].is_number());
    }
    if (json["event"] == "startup_redis") {
      CHECK(json["level"] == "warning");
      CHECK(json["redis"] == "unknown");
      CHECK(lowercase(json["detail"].get<std::string>()).find("connection refused") != std::string::npos);
    }
    if (json["event"] == "streamlock") CHECK(json["message"].is_string());
  }
  CHECK(sawChatRoute);

  const auto everything = process.stderrText() + *listening;
  CHECK(everything.find(caller.token) == std::string::npos);
  CHECK(everything.find("not-a-valid-token") == std::string::npos);
  CHECK(everything.find(chatId) == std::string::npos);
}

TEST_CASE("JSON log format: flag errors are JSON too, and seeding the demo (a token) is refused", "[server][ops]") {
  Subprocess badFlag({serverBinary(), "--log-format", "json", "--threads", "many"}, cleanEnvironment());
  CHECK(badFlag.wait(seconds{10}) == std::optional<int>(2));
  const auto badLines = lines(badFlag.stderrText());
  REQUIRE(badLines.size() == 1);
  checkJsonLine(badLines.front());
  CHECK(Json::parse(badLines.front())["message"].get<std::string>().find("--threads") != std::string::npos);

  Subprocess seed({serverBinary(), "--log-format", "json", "--seed-demo", "--database-url",
                   TestDatabase::get().conninfo()},
                  cleanEnvironment());
  CHECK(seed.wait(seconds{10}) == std::optional<int>(2));
  CHECK(seed.stderrText().find("--seed-demo") != std::string::npos);
  CHECK(seed.readAll(seconds{1}).empty());

  Subprocess badFormat({serverBinary(), "--log-format", "xml"}, cleanEnvironment());
  CHECK(badFormat.wait(seconds{10}) == std::optional<int>(2));
}

TEST_CASE("JSON log format: every line of stream_worker is one JSON object", "[server][ops]") {
  Server server;  // creates the tables
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  Subprocess worker({workerBinary(), "--chat-id", chatId, "--duration-s", "1", "--lock-ttl-s", "3", "--database-url",
                     TestDatabase::get().conninfo(), "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL"),
                     "--log-format", "json"},
                    cleanEnvironment());
  REQUIRE(worker.wait(seconds{30}) == std::optional<int>(0));
  const auto out = lines(worker.readAll(seconds{5}));
  for (const auto& line : out) checkJsonLine(line);
  for (const auto& line : lines(worker.stderrText())) checkJsonLine(line);
  const auto seen = events(out);
  CHECK(has(seen, "lock_acquired"));
  CHECK(has(seen, "marker_written"));
  CHECK(has(seen, "marker_cleared"));
  CHECK(has(seen, "lock_released"));
}

TEST_CASE("every flag can come from a STREAMLOCK_ variable, and the command line wins", "[server][ops]") {
  const auto port = freePort();
  // Only the environment: the database, the address and the Redis URL.
  Subprocess fromEnvironment(
      {serverBinary()},
      {{"DATABASE_URL", std::nullopt},
       {"REDIS_URL", std::nullopt},
       {"STREAMLOCK_DATABASE_URL", TestDatabase::get().conninfo()},
       {"STREAMLOCK_LISTEN", "127.0.0.1:" + std::to_string(port)},
       {"STREAMLOCK_REDIS_URL", requireEnv("STREAMLOCK_TEST_REDIS_URL")},
       {"STREAMLOCK_LOG_FORMAT", "json"}});
  const auto line = fromEnvironment.readLine(seconds{30});
  REQUIRE(line);
  CHECK(Json::parse(*line)["url"] == "http://127.0.0.1:" + std::to_string(port));
  CHECK(httpGet(port, "/healthz").json()["redis"] == "verified");
  fromEnvironment.signal(SIGTERM);
  CHECK(fromEnvironment.wait(seconds{15}) == std::optional<int>(0));

  // The flag wins over its variable (a variable naming a bad address and another database).
  Subprocess overridden({serverBinary(), "--listen", "127.0.0.1:0", "--database-url", TestDatabase::get().conninfo(),
                         "--log-format", "text"},
                        {{"DATABASE_URL", std::nullopt},
                         {"REDIS_URL", std::nullopt},
                         {"STREAMLOCK_LISTEN", "not-an-address"},
                         {"STREAMLOCK_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none"},
                         {"STREAMLOCK_LOG_FORMAT", "json"}});
  const auto textLine = overridden.readLine(seconds{30});
  REQUIRE(textLine);
  CHECK(textLine->rfind("listening on http://127.0.0.1:", 0) == 0);
  overridden.signal(SIGTERM);
  CHECK(overridden.wait(seconds{15}) == std::optional<int>(0));

  // A bad value names its variable.
  Subprocess bad({serverBinary()}, {{"STREAMLOCK_THREADS", "many"}, {"STREAMLOCK_DATABASE_URL", "x"}});
  CHECK(bad.wait(seconds{10}) == std::optional<int>(2));
  CHECK(bad.stderrText().find("STREAMLOCK_THREADS") != std::string::npos);
}

TEST_CASE("help lists the environment variables, and version prints the version", "[server][ops]") {
  for (const auto& binary : {serverBinary(), workerBinary()}) {
    Subprocess help({binary, "--help"}, cleanEnvironment());
    REQUIRE(help.wait(seconds{10}) == std::optional<int>(0));
    const auto text = help.readAll(seconds{5});
    CHECK(text.find("STREAMLOCK_DATABASE_URL") != std::string::npos);
    CHECK(text.find("STREAMLOCK_REDIS_URL") != std::string::npos);
    CHECK(text.find("STREAMLOCK_LOCK_TTL_S") != std::string::npos);
    CHECK(text.find("STREAMLOCK_LOG_FORMAT") != std::string::npos);
    CHECK(text.find("--log-format") != std::string::npos);

    Subprocess version({binary, "--version"}, cleanEnvironment());
    REQUIRE(version.wait(seconds{10}) == std::optional<int>(0));
    const auto name = binary.substr(binary.rfind('/') + 1);
    CHECK(version.readAll(seconds{5}) == name + " " + STREAMLOCK_EXPECTED_VERSION + "\n");
  }
  Subprocess serverHelp({serverBinary(), "--help"}, cleanEnvironment());
  REQUIRE(serverHelp.wait(seconds{10}) == std::optional<int>(0));
  const auto text = serverHelp.readAll(seconds{5});
  for (const char* variable : {"STREAMLOCK_LISTEN", "STREAMLOCK_THREADS", "STREAMLOCK_PG_POOL_SIZE",
                               "STREAMLOCK_REDIS_TIMEOUT_MS", "STREAMLOCK_PG_TIMEOUT_MS", "STREAMLOCK_SEED_DEMO"}) {
    CHECK(text.find(variable) != std::string::npos);
  }
}

TEST_CASE("metrics expose the library's gauges, latency histograms and breaker transitions", "[server][ops]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  seed.setMarker(chatId, "stream-gone");  // no lock: verified stale, repaired
  REQUIRE(server.get(kChats + "/" + chatId, caller.token).status == 200);
  REQUIRE(seed.marker(chatId) == std::nullopt);

  const auto response = server.get("/metrics");
  REQUIRE(response.status == 200);
  const auto& text = response.body;
  INFO(text);
  for (const char* expected : {
           "# TYPE streamlock_locks_held gauge\nstreamlock_locks_held 0\n",
           "# TYPE streamlock_pool_connections gauge\n",
           "streamlock_pool_connections{pool=\"redis\",state=\"in_use\"} 0\n",
           "streamlock_pool_connections{pool=\"redis\",state=\"idle\"} ",
           "streamlock_pool_connections{pool=\"postgres\",state=\"in_use\"} ",
           "streamlock_pool_connections{pool=\"postgres\",state=\"idle\"} ",
           "streamlock_pool_connections{pool=\"repair\",state=\"idle\"} 1\n",
           "streamlock_pool_max_connections{pool=\"repair\"} 2\n",
           "# TYPE streamlock_lookup_duration_seconds histogram\n",
           "streamlock_lookup_duration_seconds_bucket{le=\"+Inf\"} 1\n",
           "streamlock_lookup_duration_seconds_count 1\n",
           "streamlock_lookup_duration_seconds_bucket{le=\"5\"} 1\n",
           "# TYPE streamlock_repair_duration_seconds histogram\n",
           "streamlock_repair_duration_seconds_count 1\n",
           "# TYPE streamlock_breaker_transitions_total counter\n",
           "streamlock_breaker_transitions_total{to=\"open\"} 0\n",
           "streamlock_breaker_transitions_total{to=\"half-open\"} 0\n",
           "streamlock_breaker_transitions_total{to=\"closed\"} 0\n",
       }) {
    CHECK(text.find(expected) != std::string::npos);
  }
}
