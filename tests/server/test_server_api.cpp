// HTTP tests of mothership_server: status codes, listing, single chats, timestamps, startup,
// logs, pool exhaustion and shutdown. The server is a child process against the test services.

#include <signal.h>

#include <algorithm>
#include <regex>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.h"

using namespace servertest;

namespace {

const std::string kChats = "/api/mothership/chats";
const std::string kUnknownUuid = "00000000-0000-4000-8000-000000000000";

}  // namespace

TEST_CASE("healthz answers 200 with PostgreSQL up, Redis verified and the breaker closed", "[server]") {
  Server server(sharedRedisFlags());
  const auto response = server.get("/healthz");
  REQUIRE(response.status == 200);
  const auto body = response.json();
  CHECK(body["postgres"] == "up");
  CHECK(body["redis"] == "verified");
  CHECK(body["breaker"] == "closed");
}

TEST_CASE("metrics expose the library counters and requests by route template", "[server]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  REQUIRE(server.get(kChats + "/" + chatId, caller.token).status == 200);
  REQUIRE(server.get("/nowhere/" + chatId).status == 404);

  const auto response = server.get("/metrics");
  REQUIRE(response.status == 200);
  const auto& text = response.body;
  CHECK(text.find("streamlock_lookups_total{status=\"verified\"}") != std::string::npos);
  CHECK(text.find("streamlock_markers_repaired_total") != std::string::npos);
  CHECK(text.find("streamlock_breaker_state{state=\"closed\"} 1") != std::string::npos);
  CHECK(text.find("mothership_http_requests_total{route=\"/api/mothership/chats/{chatId}\",status=\"200\"} 1") !=
        std::string::npos);
  CHECK(text.find("mothership_http_requests_total{route=\"unmatched\",status=\"404\"} 1") != std::string::npos);
  CHECK(text.find("mothership_http_request_duration_seconds_bucket{route=\"/api/mothership/chats/{chatId}\",le=\"+Inf\"} 1") !=
        std::string::npos);
  CHECK(text.find(chatId) == std::string::npos);  // never a raw path
}

TEST_CASE("an unknown path is 404 JSON and another method on a known path is 405 JSON", "[server]") {
  Server server(sharedRedisFlags());

  const auto unknown = server.get("/api/nothing");
  CHECK(unknown.status == 404);
  CHECK(unknown.json()["error"] == "Not found");

  const auto post = server.request("POST", kChats, "{\"a\":1}");
  CHECK(post.status == 405);
  CHECK(post.json()["error"] == "Method not allowed");
  const auto deleteChat = server.request("DELETE", kChats + "/" + kUnknownUuid);
  CHECK(deleteChat.status == 405);
  CHECK(deleteChat.json()["error"] == "Method not allowed");
  const auto putHealth = server.request("PUT", "/healthz", "x");
  CHECK(putHealth.status == 405);
  const auto postUnknown = server.request("POST", "/elsewhere", "x");
  CHECK(postUnknown.status == 404);
  CHECK(postUnknown.json()["error"] == "Not found");

  // A path far longer than a regex router survives.
  const auto longPath = server.get(kChats + "/" + std::string(7000, 'a'));
  CHECK(longPath.status == 401);
  const auto longUnknown = server.get("/" + std::string(7000, 'b') + "/x");
  CHECK(longUnknown.status == 404);
}

TEST_CASE("a request with a body does not spoil the next request on the same connection", "[server]") {
  Server server(sharedRedisFlags());
  httplib::Client client("127.0.0.1", server.port());
  client.set_keep_alive(true);
  const auto post = client.Post(kChats.c_str(), std::string(1000, 'x'), "text/plain");
  REQUIRE(post);
  CHECK(post->status == 405);
  const auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
}

TEST_CASE("list: 401 for a missing, malformed, unknown or revoked token", "[server][auth]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto path = chatListPath(caller.workspaceId);

  REQUIRE(server.get(path, caller.token).status == 200);

  const auto none = server.get(path);
  CHECK(none.status == 401);
  CHECK(none.json() == Json{{"error", "Unauthorized"}});
  CHECK(server.get(path, {}, {{"Authorization", "Basic dXNlcjpwYXNz"}}).status == 401);
  CHECK(server.get(path, {}, {{"Authorization", "Bearer"}}).status == 401);
  CHECK(server.get(path, {}, {{"Authorization", "Bearer a b"}}).status == 401);
  CHECK(server.get(path, "tok_unknown").status == 401);
  CHECK(server.get(path, caller.token + "x").status == 401);

  seed.revoke(caller.token);
  const auto revoked = server.get(path, caller.token);
  CHECK(revoked.status == 401);
  CHECK(revoked.json() == Json{{"error", "Unauthorized"}});
}

TEST_CASE("a token is the Authorization header's bytes as sent: never percent-decoded", "[server][auth]") {
  Server server(sharedRedisFlags());
  Sql& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto path = chatListPath(caller.workspaceId);
  REQUIRE(server.get(path, caller.token).status == 200);

  // "%74ok_..." is not the token "tok_...": its SHA-256 is in no api_keys row, so it is unknown.
  const std::string spelled = "%74" + caller.token.substr(1);
  REQUIRE(caller.token.front() == 't');
  CHECK(server.get(path, spelled).status == 401);
  CHECK(server.get(path, "%u0074" + caller.token.substr(1)).status == 401);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  CHECK(server.get("/api/mothership/chats/" + chatId, spelled).status == 401);

  // And a key whose token holds a '%' works as sent.
  const std::string withPercent = "tok%41" + caller.token.substr(4);
  sql.exec("INSERT INTO api_keys (token_sha256, user_id) VALUES (encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2)",
           {withPercent, caller.userId});
  CHECK(server.get(path, withPercent).status == 200);
  CHECK(server.get(path, "tokA" + caller.token.substr(4)).status == 401);
}

TEST_CASE("list: 400 for a missing, empty or repeated workspaceId and a bad or repeated scope", "[server]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto& ws = caller.workspaceId;

  for (const auto& path : {kChats, kChats + "?workspaceId=", kChats + "?workspaceId", kChats + "?scope=active",
                           kChats + "?workspaceId=" + ws + "&workspaceId=" + ws,
                           kChats + "?workspaceId=" + ws + "&scope=", kChats + "?workspaceId=" + ws + "&scope=all",
                           kChats + "?workspaceId=" + ws + "&scope=ACTIVE",
                           kChats + "?workspaceId=" + ws + "&scope=active&scope=active"}) {
    INFO(path);
    const auto response = server.get(path, caller.token);
    CHECK(response.status == 400);
    CHECK(response.json()["error"].is_string());
    // Authentication comes first.
    CHECK(server.get(path, "tok_unknown").status == 401);
  }
  CHECK(server.get(kChats + "?workspaceId=" + ws + "&scope=active", caller.token).status == 200);
  CHECK(server.get(kChats + "?workspaceId=" + ws + "&scope=archived", caller.token).status == 200);
}

TEST_CASE("list: 403 for a workspace the caller is not a member of, an archived or an unknown one", "[server][auth]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto other = newCaller(seed);
  const auto archived = seed.workspace(/*archived=*/true);
  seed.member(archived, caller.userId);

  for (const auto& ws : {other.workspaceId, archived, std::string("ws-does-not-exist")}) {
    INFO(ws);
    const auto response = server.get(chatListPath(ws), caller.token);
    CHECK(response.status == 403);
    CHECK(response.json() == Json{{"error", "Workspace access denied"}});
  }
  // Archiving the caller's own workspace takes access away at once.
  TestDatabase::get().sql().exec("UPDATE workspaces SET archived_at = now() WHERE id = $1", {caller.workspaceId});
  CHECK(server.get(chatListPath(caller.workspaceId), caller.token).status == 403);
}

TEST_CASE("list: the caller's own mothership chats of the workspace, by scope", "[server]") {
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto other = newCaller(seed);
  seed.member(caller.workspaceId, other.userId);
  const auto secondWorkspace = seed.workspace();
  seed.member(secondWorkspace, caller.userId);

  const auto mine = seed.chat(caller.userId, caller.workspaceId, "mine");
  const auto deleted = seed.chat(caller.userId, caller.workspaceId, "deleted");
  sql.exec("UPDATE copilot_chats SET deleted_at = now() WHERE id = $1::uuid", {deleted});
  seed.chat(caller.userId, caller.workspaceId, "copilot", "copilot");
  seed.chat(other.userId, caller.workspaceId, "theirs");
  seed.chat(caller.userId, secondWorkspace, "elsewhere");
  seed.chat(caller.userId, std::nullopt, "no workspace");

  const auto active = server.get(chatListPath(caller.workspaceId), caller.token);
  REQUIRE(active.status == 200);
  const auto body = active.json();
  CHECK(body["success"] == true);
  REQUIRE(body["data"].size() == 1);
  const auto& chat = body["data"][0];
  CHECK(chat["id"] == mine);
  CHECK(chat["title"] == "mine");
  CHECK(chat["activeStreamId"].is_null());
  CHECK(chat["lastSeenAt"].is_null());
  CHECK(chat["pinned"] == false);
  CHECK(chat["deletedAt"].is_null());
  std::vector<std::string> keys;
  for (const auto& item : chat.items()) keys.push_back(item.key());
  CHECK(keys.size() == 7);

  const auto archived = server.get(chatListPath(caller.workspaceId, "archived"), caller.token).json();
  REQUIRE(archived["data"].size() == 1);
  CHECK(archived["data"][0]["id"] == deleted);
  CHECK(archived["data"][0]["deletedAt"].is_string());

  const auto empty = server.get(chatListPath(secondWorkspace, "archived"), caller.token);
  REQUIRE(empty.status == 200);
  CHECK(empty.json() == Json{{"success", true}, {"data", Json::array()}});
}

TEST_CASE("list: titles are escaped exactly as nlohmann::json dumps them, at every offset", "[server]") {
  // The list body is written by hand, 8 bytes at a time where nothing needs escaping: put each
  // character that does at every position of a 16-byte window, between plain and UTF-8 text.
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  std::vector<std::string> specials = {"\"", "\\", "\b", "\f", "\n", "\r", "\t", "\x7f", "/", "\xc3\xa9",
                                       "\xe2\x9c\x93"};
  for (char c = 1; c < 0x20; ++c) specials.emplace_back(1, c);
  std::vector<std::string> titles;
  for (std::size_t i = 0; i < specials.size(); ++i) {
    const std::size_t at = i % 17;
    titles.push_back(std::string(at, 'a') + specials[i] + "plain text \xc3\xa9 more" + specials[(i + 5) % specials.size()]);
  }
  titles.push_back(std::string(40, 'x'));  // nothing to escape, longer than a few words
  titles.push_back("");
  for (const auto& title : titles) seed.chat(caller.userId, caller.workspaceId, title);

  const auto response = server.get(chatListPath(caller.workspaceId), caller.token);
  REQUIRE(response.status == 200);
  const auto body = response.json();
  std::vector<std::string> listed;
  for (const auto& chat : body["data"]) listed.push_back(chat["title"]);
  std::sort(listed.begin(), listed.end());
  auto expected = titles;
  std::sort(expected.begin(), expected.end());
  CHECK(listed == expected);
  for (const auto& title : titles) {
    INFO(Json(title).dump());
    CHECK(response.body.find("\"title\":" + Json(title).dump() + ",") != std::string::npos);
  }
}

TEST_CASE("list: ordered by pinned, then updated_at descending, then id", "[server]") {
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  auto chatAt = [&](const std::string& title, const std::string& updatedAt, bool pinned) {
    const auto id = seed.chat(caller.userId, caller.workspaceId, title);
    sql.exec("UPDATE copilot_chats SET updated_at = $2::timestamptz, pinned = $3 WHERE id = $1::uuid",
             {id, updatedAt, pinned ? "true" : "false"});
    return id;
  };
  const auto pinnedOld = chatAt("pinned old", "2020-01-01T00:00:00Z", true);
  const auto newest = chatAt("newest", "2026-05-11T12:00:00Z", false);
  const auto tieA = chatAt("tie", "2025-01-01T00:00:00Z", false);
  const auto tieB = chatAt("tie", "2025-01-01T00:00:00Z", false);
  const auto older = chatAt("older", "2024-01-01T00:00:00Z", false);
  const auto pinnedNew = chatAt("pinned new", "2021-01-01T00:00:00Z", true);

  std::vector<std::string> expected{pinnedNew, pinnedOld, newest, std::min(tieA, tieB), std::max(tieA, tieB), older};
  const auto body = server.get(chatListPath(caller.workspaceId), caller.token).json();
  std::vector<std::string> actual;
  for (const auto& chat : body["data"]) actual.push_back(chat["id"]);
  CHECK(actual == expected);
}

TEST_CASE("timestamps are ISO 8601 UTC with truncated milliseconds, whatever the session time zone", "[server]") {
  auto& database = TestDatabase::get();
  // Before the server opens its connections: every session of this database starts in +12:45.
  database.sql().exec("ALTER DATABASE " + database.name() + " SET timezone = 'Pacific/Chatham'");
  Server server(sharedRedisFlags());
  auto& sql = database.sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  sql.exec("UPDATE copilot_chats SET updated_at = '2026-05-11 12:00:00.123999+00', "
           "last_seen_at = '2026-05-11 14:30:05.000001+02', created_at = '2026-01-02 03:04:05+00' "
           "WHERE id = $1::uuid",
           {chatId});

  const auto list = server.get(chatListPath(caller.workspaceId), caller.token).json();
  REQUIRE(list["data"].size() == 1);
  CHECK(list["data"][0]["updatedAt"] == "2026-05-11T12:00:00.123Z");
  CHECK(list["data"][0]["lastSeenAt"] == "2026-05-11T12:30:05.000Z");

  const auto chat = server.get(kChats + "/" + chatId, caller.token).json()["chat"];
  CHECK(chat["createdAt"] == "2026-01-02T03:04:05.000Z");
  CHECK(chat["updatedAt"] == "2026-05-11T12:00:00.123Z");

  sql.exec("UPDATE copilot_chats SET deleted_at = '2026-05-11 23:59:59.9999+00' WHERE id = $1::uuid", {chatId});
  const auto archived = server.get(chatListPath(caller.workspaceId, "archived"), caller.token).json();
  REQUIRE(archived["data"].size() == 1);
  CHECK(archived["data"][0]["deletedAt"] == "2026-05-11T23:59:59.999Z");
}

TEST_CASE("chat: 200 with the stored messages and resources", "[server]") {
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId, "with content");
  sql.exec("UPDATE copilot_chats SET messages = $2::jsonb, resources = $3::jsonb WHERE id = $1::uuid",
           {chatId, R"([{"role":"user","content":"héllo \"quoted\""},{"n":12345678901234567890}])",
            R"([{"type":"file","id":"r1"}])"});

  const auto response = server.get(kChats + "/" + chatId, caller.token);
  REQUIRE(response.status == 200);
  const auto body = response.json();
  CHECK(body["success"] == true);
  const auto& chat = body["chat"];
  CHECK(chat["id"] == chatId);
  CHECK(chat["title"] == "with content");
  CHECK(chat["messages"][0]["content"] == "héllo \"quoted\"");
  CHECK(chat["resources"] == Json::parse(R"([{"type":"file","id":"r1"}])"));
  CHECK(chat["activeStreamId"].is_null());
  CHECK(response.body.find("12345678901234567890") != std::string::npos);  // numbers as stored
  std::vector<std::string> keys;
  for (const auto& item : chat.items()) keys.push_back(item.key());
  std::sort(keys.begin(), keys.end());
  CHECK(keys == std::vector<std::string>{"activeStreamId", "createdAt", "id", "messages", "resources", "title",
                                         "updatedAt"});

  // Any case of hex digits names the same chat.
  std::string upper = chatId;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
  CHECK(server.get(kChats + "/" + upper, caller.token).status == 200);
}

TEST_CASE("chat: a chat id that is not a UUID is 404 after authentication, never 500", "[server]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  for (const auto& id : std::vector<std::string>{"not-a-uuid", "123", "00000000-0000-4000-8000-00000000000g",
                               "{00000000-0000-4000-8000-000000000000}", "000000000000400080000000000000000000",
                               "00000000-0000-4000-8000-0000000000000", "%27%3B%20DROP%20TABLE%20users",
                               "..", std::string(300, 'f')}) {
    INFO(id);
    const auto response = server.get(kChats + "/" + id, caller.token);
    CHECK(response.status == 404);
    CHECK(response.json() == Json{{"success", false}, {"error", "Chat not found"}});
    CHECK(server.get(kChats + "/" + id).status == 401);
  }
  CHECK(server.get(kChats + "/" + kUnknownUuid, caller.token).status == 404);
}

TEST_CASE("chat: 404 for another user's chat, a copilot or deleted chat, or a workspace without access",
          "[server][auth]") {
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto other = newCaller(seed);
  seed.member(caller.workspaceId, other.userId);

  const auto theirs = seed.chat(other.userId, caller.workspaceId);
  const auto copilot = seed.chat(caller.userId, caller.workspaceId, "copilot", "copilot");
  const auto deleted = seed.chat(caller.userId, caller.workspaceId);
  sql.exec("UPDATE copilot_chats SET deleted_at = now() WHERE id = $1::uuid", {deleted});
  const auto leftWorkspace = seed.workspace();
  seed.member(leftWorkspace, caller.userId);
  const auto inLeftWorkspace = seed.chat(caller.userId, leftWorkspace);
  const auto archivedWorkspace = seed.workspace();
  seed.member(archivedWorkspace, caller.userId);
  const auto inArchivedWorkspace = seed.chat(caller.userId, archivedWorkspace);
  const auto noWorkspace = seed.chat(caller.userId, std::nullopt);

  REQUIRE(server.get(kChats + "/" + inLeftWorkspace, caller.token).status == 200);
  REQUIRE(server.get(kChats + "/" + inArchivedWorkspace, caller.token).status == 200);
  sql.exec("DELETE FROM workspace_members WHERE workspace_id = $1", {leftWorkspace});
  sql.exec("UPDATE workspaces SET archived_at = now() WHERE id = $1", {archivedWorkspace});

  for (const auto& id : {theirs, copilot, deleted, inLeftWorkspace, inArchivedWorkspace}) {
    INFO(id);
    const auto response = server.get(kChats + "/" + id, caller.token);
    CHECK(response.status == 404);
    CHECK(response.json() == Json{{"success", false}, {"error", "Chat not found"}});
  }
  CHECK(server.get(kChats + "/" + noWorkspace, caller.token).status == 200);
  CHECK(server.get(kChats + "/" + theirs, other.token).status == 200);
}

TEST_CASE("chat: 401 for a missing, unknown or revoked token", "[server][auth]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  REQUIRE(server.get(kChats + "/" + chatId, caller.token).status == 200);
  CHECK(server.get(kChats + "/" + chatId).status == 401);
  CHECK(server.get(kChats + "/" + chatId, "tok_nope").status == 401);
  seed.revoke(caller.token);
  const auto revoked = server.get(kChats + "/" + chatId, caller.token);
  CHECK(revoked.status == 401);
  CHECK(revoked.json() == Json{{"error", "Unauthorized"}});
}

TEST_CASE("startup: a bad flag or an unreachable database exits non-zero with one line on stderr", "[server][startup]") {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), serverBinary());
    Subprocess process(args, {{"DATABASE_URL", std::nullopt}, {"REDIS_URL", std::nullopt}});
    const auto code = process.wait(std::chrono::seconds{60});
    return std::make_pair(code, process.stderrText());
  };
  auto lineCount = [](const std::string& text) { return std::count(text.begin(), text.end(), '\n'); };

  const auto badFlag = run({"--no-such-flag"});
  REQUIRE(badFlag.first.has_value());
  CHECK(*badFlag.first != 0);
  CHECK(lineCount(badFlag.second) == 1);
  CHECK(badFlag.second.find("--no-such-flag") != std::string::npos);

  const auto badValue = run({"--threads", "many", "--database-url", TestDatabase::get().conninfo()});
  REQUIRE(badValue.first.has_value());
  CHECK(*badValue.first != 0);
  CHECK(lineCount(badValue.second) == 1);

  // A TTL the library would refuse (the heartbeat needs 1 s plus 500 ms inside it) is a bad value
  // of the flag, named as such, not a message about an option the user cannot set.
  const auto shortTtl = run({"--lock-ttl-s", "1", "--database-url", TestDatabase::get().conninfo()});
  REQUIRE(shortTtl.first.has_value());
  CHECK(*shortTtl.first == 2);
  CHECK(lineCount(shortTtl.second) == 1);
  CHECK(shortTtl.second.find("--lock-ttl-s") != std::string::npos);

  const auto noDatabase = run({});
  REQUIRE(noDatabase.first.has_value());
  CHECK(*noDatabase.first != 0);
  CHECK(lineCount(noDatabase.second) == 1);

  const auto port = freePort();
  const auto unreachable =
      run({"--database-url", "postgresql://nobody:s3cret-pw@127.0.0.1:" + std::to_string(port) + "/none"});
  REQUIRE(unreachable.first.has_value());
  CHECK(*unreachable.first != 0);
  CHECK(lineCount(unreachable.second) == 1);
  CHECK(unreachable.second.find("s3cret-pw") == std::string::npos);

  Subprocess help({serverBinary(), "--help"});
  CHECK(help.wait(std::chrono::seconds{30}) == std::optional<int>(0));
  CHECK(help.readAll(std::chrono::seconds{5}).find("--listen") != std::string::npos);
}

TEST_CASE("stream_worker: a bad flag exits 2 with one line naming it, even as the last argument", "[server][startup]") {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), workerBinary());
    Subprocess process(args, {{"DATABASE_URL", std::nullopt}, {"REDIS_URL", std::nullopt}});
    const auto code = process.wait(std::chrono::seconds{60});
    return std::make_pair(code, process.stderrText());
  };
  const auto chatId = "5eed0000-0000-4000-8000-000000000001";
  // An unknown flag last is unknown, not a known flag missing its value.
  const auto unknownLast = run({"--chat-id", chatId, "--no-such-flag"});
  CHECK(unknownLast.first == std::optional<int>(2));
  CHECK(unknownLast.second == "stream_worker: unknown flag --no-such-flag (see --help)\n");
  const auto unknownFirst = run({"--no-such-flag", "1", "--chat-id", chatId});
  CHECK(unknownFirst.first == std::optional<int>(2));
  CHECK(unknownFirst.second == "stream_worker: unknown flag --no-such-flag (see --help)\n");
  const auto missingValue = run({"--chat-id", chatId, "--duration-s"});
  CHECK(missingValue.first == std::optional<int>(2));
  CHECK(missingValue.second == "stream_worker: --duration-s needs a value (see --help)\n");
  const auto badValue = run({"--chat-id", chatId, "--wait-lock-ms", "-1"});
  CHECK(badValue.first == std::optional<int>(2));
  CHECK(badValue.second == "stream_worker: invalid value for --wait-lock-ms (see --help)\n");
  const auto shortTtl = run({"--chat-id", chatId, "--lock-ttl-s", "1"});
  CHECK(shortTtl.first == std::optional<int>(2));
  CHECK(shortTtl.second == "stream_worker: invalid value for --lock-ttl-s (see --help)\n");
}

TEST_CASE("startup: works on existing tables owned by someone else, without CREATE privilege", "[server][startup]") {
  const ScratchDatabase database;
  Sql sql(database.conninfo());
  // The demo schema, created by "someone else" (the superuser), and a role that may only use it.
  sql.exec(R"(
    CREATE TABLE users (id text PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
    CREATE TABLE workspaces (id text PRIMARY KEY, name text NOT NULL, archived_at timestamptz);
    CREATE TABLE workspace_members (
      workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
      user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      PRIMARY KEY (workspace_id, user_id));
    CREATE TABLE api_keys (
      token_sha256 text PRIMARY KEY,
      user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      revoked_at timestamptz);
    CREATE TABLE copilot_chats (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
      workspace_id text REFERENCES workspaces(id) ON DELETE CASCADE,
      type text NOT NULL DEFAULT 'copilot' CHECK (type IN ('copilot', 'mothership')),
      title text,
      conversation_id text,
      messages jsonb NOT NULL DEFAULT '[]',
      resources jsonb NOT NULL DEFAULT '[]',
      last_seen_at timestamptz,
      pinned boolean NOT NULL DEFAULT false,
      deleted_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
  )");
  const auto role = database.name() + "_app";
  sql.exec("CREATE ROLE " + role + " LOGIN PASSWORD 'app-pw'");
  struct DropRole {
    Sql& sql;
    std::string role;
    ~DropRole() {
      try {
        sql.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", {role});
        sql.exec("DROP OWNED BY " + role);
        sql.exec("DROP ROLE IF EXISTS " + role);
      } catch (const std::exception&) {
      }
    }
  } const dropRole{sql, role};
  sql.exec("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO " + role);

  Seed seed(sql);
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  seed.setMarker(chatId, "stream-stale-owned");
  const Server server(sharedRedisFlags(), database.conninfoAs(role, "app-pw"));
  CHECK(server.get(chatListPath(caller.workspaceId), caller.token).status == 200);
  const auto chat = server.get(kChats + "/" + chatId, caller.token);
  CHECK(chat.status == 200);
  CHECK(chat.json()["chat"]["activeStreamId"].is_null());
  CHECK(seed.marker(chatId) == std::nullopt);  // repaired with the role's UPDATE privilege
}

TEST_CASE("the seed-demo flag prints a token that lists the demo workspace's chats", "[server][startup]") {
  auto flags = sharedRedisFlags();
  flags.push_back("--seed-demo");
  Server server(flags);
  std::string token;
  std::string workspace;
  for (const auto& line : server.startupLines()) {
    if (line.rfind("demo token: ", 0) == 0) token = line.substr(12);
    if (line.rfind("demo workspace: ", 0) == 0) workspace = line.substr(16);
  }
  REQUIRE(!token.empty());
  REQUIRE(!workspace.empty());
  const auto response = server.get(chatListPath(workspace), token);
  REQUIRE(response.status == 200);
  CHECK(response.json()["data"].size() >= 3);
  CHECK(server.process().stderrText().find(token) == std::string::npos);
}

TEST_CASE("the access log names route templates and statuses, never tokens or raw paths", "[server]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  REQUIRE(server.get(kChats + "/" + chatId, caller.token).status == 200);
  REQUIRE(server.get(chatListPath(caller.workspaceId), caller.token).status == 200);
  REQUIRE(server.get("/secret-" + caller.token).status == 404);

  const auto log = [&] { return server.process().stderrText(); };
  REQUIRE(eventually([&] { return log().find("route=unmatched status=404") != std::string::npos; }));
  CHECK(log().find("GET route=/api/mothership/chats/{chatId} status=200") != std::string::npos);
  CHECK(log().find("GET route=/api/mothership/chats status=200") != std::string::npos);
  CHECK(log().find(caller.token) == std::string::npos);
  CHECK(log().find(chatId) == std::string::npos);
  CHECK(log().find(caller.workspaceId) == std::string::npos);
}

TEST_CASE("no free PostgreSQL connection in time answers 503 JSON", "[server]") {
  // One statement per connection: with pipelining, the second statement could join the first one's
  // connection (test_server_pipeline.cpp covers that).
  Server server({"--threads", "8", "--pg-pool-size", "1", "--pg-pipeline-depth", "1", "--redis-url",
                 requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  auto& database = TestDatabase::get();
  Seed seed(database.sql());
  const auto caller = newCaller(seed);
  REQUIRE(server.get(chatListPath(caller.workspaceId), caller.token).status == 200);

  // Another session holds the chats table: the server's only connection waits behind it.
  Sql locker(database.conninfo());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
  Response blocked;
  std::thread first([&] { blocked = server.get(chatListPath(caller.workspaceId), caller.token); });
  const bool waiting = eventually([&] { return waitingOnLocks(database.sql()) >= 1; });

  const auto second = waiting ? server.get(chatListPath(caller.workspaceId), caller.token) : Response{};
  locker.exec("ROLLBACK");
  first.join();
  REQUIRE(waiting);
  CHECK(second.status == 503);
  CHECK(second.json() == Json{{"error", "Service unavailable"}});
  CHECK(blocked.status != 503);
  CHECK(server.get(chatListPath(caller.workspaceId), caller.token).status == 200);
}

TEST_CASE("SIGTERM lets an in-flight request finish, then the server exits 0", "[server]") {
  Server server(sharedRedisFlags());
  auto& database = TestDatabase::get();
  Seed seed(database.sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  REQUIRE(server.get(kChats + "/" + chatId, caller.token).status == 200);

  Sql locker(database.conninfo());
  locker.exec("BEGIN");
  locker.exec("LOCK TABLE copilot_chats IN ACCESS EXCLUSIVE MODE");
  Response inFlight;
  std::thread request([&] { inFlight = server.get(kChats + "/" + chatId, caller.token); });
  const bool waiting = eventually([&] { return waitingOnLocks(database.sql()) >= 1; });
  server.process().signal(SIGTERM);
  const bool stopping = eventually(
      [&] { return server.process().stderrText().find("SIGTERM received") != std::string::npos; });
  locker.exec("ROLLBACK");
  request.join();
  const auto exitCode = server.process().wait(std::chrono::seconds{30});

  REQUIRE(waiting);
  REQUIRE(stopping);
  CHECK(inFlight.status == 200);
  CHECK(exitCode == std::optional<int>(0));
}
