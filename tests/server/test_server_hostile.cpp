// Hostile input against mothership_server. Each corpus below is a table of (what, the request's
// exact bytes, what it must get), sent over a raw socket so that no client library normalises it.
// Whatever a case must get, every answer also obeys the invariants of checkAnswer: no 5xx for a
// client's mistake, at most one final response, a JSON body on every error, no internal detail.
// After each corpus the server must still answer /healthz, must not have logged a token or a
// database failure, and (the harness checks it) must exit 0 on SIGTERM.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "harness.h"
#include "raw_http.h"

using namespace servertest;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

const std::string kChats = "/api/mothership/chats";
const std::string kUuid = "00000000-0000-4000-8000-000000000000";

// Any 4xx, or the connection closed without an answer: the case's exact status is httplib's choice.
constexpr int kRejected = -1;

struct Case {
  std::string what;
  std::string bytes;  // the whole request, sent as is
  int want;           // the status, or kRejected
};

std::string list(const std::string& query) { return kChats + "?" + query; }

// Strings that no answer may contain: SQL, the database's name for itself, errors, stacks, paths.
const std::vector<std::string> kInternalDetail{
    "SQL",  "sql",  "PostgreSQL", "postgres", "ERROR:", "SELECT", "caller AS", "sqlstate", "syntax",
    "exception", "what()", "std::", "terminate", "/work/", "/usr/", ".cpp", ".h:", "EXCEPTION_WHAT"};

// The invariants of every answer, whatever the case wants.
void checkAnswer(const Answer& answer) {
  INFO("answer: " << answer.raw.substr(0, 600));
  CHECK(answer.status < 500);
  CHECK(answer.responses <= 1);
  CHECK((answer.status != 0 || answer.closed));  // answered or closed: never left hanging
  if (answer.status == 0) return;
  for (const auto& detail : kInternalDetail) {
    INFO("internal detail: " << detail);
    CHECK(answer.head.find(detail) == std::string::npos);
    if (answer.status != 200) CHECK(answer.body.find(detail) == std::string::npos);
  }
  if (answer.status >= 400 && !answer.body.empty()) {
    Json body;
    CHECK_NOTHROW(body = Json::parse(answer.body));
    CHECK(body.is_object());
    CHECK(body.contains("error"));
  }
}

void runCorpus(const Server& server, const std::vector<Case>& corpus) {
  for (const auto& item : corpus) {
    INFO("case: " << item.what << " (" << item.bytes.size() << " bytes)");
    const auto answer = exchange(server.port(), item.bytes);
    checkAnswer(answer);
    if (item.want == kRejected) {
      INFO("status " << answer.status);
      CHECK((answer.status == 0 || (answer.status >= 400 && answer.status < 500)));
    } else {
      CHECK(answer.status == item.want);
    }
  }
}

// After a corpus: still serving, and its log holds no secret and no database failure.
void checkAfterCorpus(Server& server, const std::vector<std::string>& secrets) {
  REQUIRE(server.process().running());
  CHECK(server.get("/healthz").status == 200);
  const auto log = server.process().stderrText();
  for (const auto& secret : secrets) {
    INFO("secret: " << secret);
    CHECK(log.find(secret) == std::string::npos);
  }
  CHECK(log.find("database failure") == std::string::npos);
  CHECK(log.find("internal error") == std::string::npos);
}

std::string repeat(const std::string& part, std::size_t times) {
  std::string out;
  out.reserve(part.size() * times);
  for (std::size_t i = 0; i < times; ++i) out += part;
  return out;
}

// The server's VmRSS (kB) and thread count, from /proc.
std::pair<long, long> memoryAndThreads(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  long rss = 0;
  long threads = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6));
    if (line.rfind("Threads:", 0) == 0) threads = std::stol(line.substr(8));
  }
  return {rss, threads};
}

}  // namespace

TEST_CASE("hostile: chat ids that are not UUIDs, SQL, control bytes, bad escapes and long paths", "[server][hostile]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto chatId = seed.chat(caller.userId, caller.workspaceId);
  const auto auth = bearer(caller.token);
  const auto chat = [&](const std::string& id) { return get(kChats + "/" + id, auth); };

  const std::vector<Case> corpus{
      {"the caller's chat (control)", chat(chatId), 200},
      {"not a UUID", chat("not-a-uuid"), 404},
      {"a UUID and more", chat(chatId + "0"), 404},
      {"a UUID with a trailing NUL (%00)", chat(chatId + "%00"), 404},
      {"a UUID with a trailing %u0000", chat(chatId + "%u0000"), 404},
      {"a UUID with a trailing newline (%0a)", chat(chatId + "%0a"), 404},
      {"a UUID with CR LF and a header (%0d%0a)", chat(chatId + "%0d%0aX-Injected:%201"), 404},
      {"a raw control byte", chat(chatId.substr(0, 35) + "\x01"), 404},
      {"a raw tab inside", chat(chatId.substr(0, 8) + "\t" + chatId.substr(8)), 404},
      {"a raw tab at the end (httplib trims it)", chat(chatId + "\t"), 200},
      {"a raw DEL and high bytes", chat(std::string("\x7f\xff\xfe", 3)), 404},
      {"quote, OR 1=1, comment", chat("%27%20OR%201%3D1%20--"), 404},
      {"quote, semicolon, DROP", chat("x%27%3B%20DROP%20TABLE%20copilot_chats%3B--"), 404},
      {"raw quotes and semicolons", chat("'\";--/**/"), 404},
      {"a UUID and a UNION", chat(kUuid + "'%20UNION%20SELECT%201--"), 404},
      {"invalid escape %zz", chat("%zz"), 404},
      {"truncated escape %4", chat("%4"), 404},
      {"a lone trailing %", chat(chatId + "%"), 404},
      {"a truncated %u12", chat("%u12"), 404},
      {"an encoded slash", chat("a%2Fb"), 404},
      {"dot segments", get(kChats + "/../../../../etc/passwd", auth), 404},
      {"an encoded right-to-left override", chat("%E2%80%AE" + chatId), 404},
      {"overlong UTF-8", chat("%C0%AE%C0%AE"), 404},
      {"7 KB id (routed, not a UUID)", chat(std::string(7000, 'a')), 404},
      {"7 KB id without a token", get(kChats + "/" + std::string(7000, 'a')), 401},
      {"10 KB path", chat(std::string(10 * 1024, 'a')), kRejected},
      {"100 KB path", chat(std::string(100 * 1024, 'a')), kRejected},
      {"100 KB path of slashes", get(repeat("/", 100 * 1024), auth), kRejected},
      {"100 KB unknown path", get("/" + std::string(100 * 1024, 'b')), kRejected},
      {"a path with a raw NUL", "GET " + kChats + "/" + std::string("a\0b", 3) + " HTTP/1.1\r\nConnection: close\r\n\r\n",
       kRejected},
      {"unknown path with a NUL escape", get("/healthz%00"), 404},
      {"an encoded query mark", get(kChats + "%3FworkspaceId=" + caller.workspaceId, auth), 404},
      {"double slash", get("//healthz"), 404},
      {"absolute form", get("http://127.0.0.1/healthz"), 404},
      {"asterisk form", get("*"), 404},
      {"a fragment", get("/healthz#x"), 200},
  };
  runCorpus(server, corpus);
  checkAfterCorpus(server, {caller.token, chatId});
}

TEST_CASE("hostile: list queries with SQL, control bytes, bad escapes, duplicates and 100 KB", "[server][hostile]") {
  Server server(sharedRedisFlags());
  auto& sql = TestDatabase::get().sql();
  Seed seed(sql);
  const auto caller = newCaller(seed);
  seed.chat(caller.userId, caller.workspaceId);
  const auto auth = bearer(caller.token);
  const auto& ws = caller.workspaceId;
  const auto query = [&](const std::string& q) { return get(list(q), auth); };

  // A workspaceId that PostgreSQL text cannot hold (NUL, invalid UTF-8) names no workspace: 403, as
  // an unknown one (the contract's 400 list does not include it), and it never reaches the
  // database, where a NUL would truncate it to the caller's own workspace.
  const std::vector<Case> corpus{
      {"the caller's workspace (control)", query("workspaceId=" + ws), 200},
      {"quote, OR 1=1, comment", query("workspaceId=%27%20OR%201%3D1%20--"), 403},
      {"the caller's id, then OR 1=1", query("workspaceId=" + ws + "%27%20OR%20%271%27%3D%271"), 403},
      {"semicolon and DROP", query("workspaceId=x%27%3B%20DROP%20TABLE%20workspaces%3B--"), 403},
      {"comment openers", query("workspaceId=%2F*%20*%2F--%23"), 403},
      {"raw quotes", query("workspaceId='\"';"), 403},
      {"backslashes and dollar quotes", query("workspaceId=%5C%5C%24%24x%24%24"), 403},
      {"NUL (%00)", query("workspaceId=%00"), 403},
      {"the caller's id and a NUL: no truncation", query("workspaceId=" + ws + "%00junk"), 403},
      {"the caller's id and %u0000", query("workspaceId=" + ws + "%u0000"), 403},
      {"a newline (%0a)", query("workspaceId=" + ws + "%0a"), 403},
      {"CR LF and a header (%0d%0a)", query("workspaceId=" + ws + "%0d%0aX-Injected:%201"), 403},
      {"control bytes %01-%1f", query("workspaceId=%01%02%03%1b%1f"), 403},
      {"a raw tab inside", query("workspaceId=" + ws + "\tx"), 403},
      {"invalid UTF-8 %ff", query("workspaceId=%ff"), 403},
      {"overlong UTF-8 %c0%80", query("workspaceId=%c0%80"), 403},
      {"a UTF-16 surrogate as UTF-8", query("workspaceId=%ed%a0%80"), 403},
      {"a truncated UTF-8 sequence", query("workspaceId=" + ws + "%e2%82"), 403},
      {"invalid escape %zz", query("workspaceId=%zz"), 403},
      {"truncated escape %4", query("workspaceId=%4"), 403},
      {"a lone %", query("workspaceId=%"), 403},
      {"a trailing %", query("workspaceId=" + ws + "%"), 403},
      {"scope with SQL", query("workspaceId=" + ws + "&scope=active%27--"), 400},
      {"scope with a NUL", query("workspaceId=" + ws + "&scope=active%00"), 400},
      {"scope with CR LF", query("workspaceId=" + ws + "&scope=active%0d%0a"), 400},
      {"scope with a bad escape", query("workspaceId=" + ws + "&scope=%zz"), 400},
      {"scope in capitals", query("workspaceId=" + ws + "&scope=ACTIVE"), 400},
      {"workspaceId twice, same value", query("workspaceId=" + ws + "&workspaceId=" + ws), 400},
      {"workspaceId twice, other value", query("workspaceId=" + ws + "&workspaceId=x"), 400},
      {"workspaceId twice, the second empty", query("workspaceId=" + ws + "&workspaceId"), 400},
      {"workspaceId twice, the second name escaped", query("workspaceId=" + ws + "&workspace%49d=x"), 400},
      {"workspaceId twice, the second name with +", query("workspaceId=x&workspaceId+=y"), 403},
      {"scope twice", query("workspaceId=" + ws + "&scope=active&scope=archived"), 400},
      {"an empty name before a duplicate", query("workspaceId=" + ws + "&=workspaceId=x"), 200},
      {"a tab before a duplicate name", query("workspaceId=" + ws + "&\tworkspaceId=x"), 200},
      {"a value with '=' in it", query("workspaceId=" + ws + "=x"), 403},
      {"1,900 other parameters (7.6 KB)", query("workspaceId=" + ws + repeat("&a=1", 1900)), 200},
      {"1,900 empty pairs", query(repeat("&", 1900) + "workspaceId=" + ws), 200},
      {"10,000 parameters", query("workspaceId=" + ws + repeat("&a=1", 10000)), kRejected},
      {"100 KB query string", query("workspaceId=" + std::string(100 * 1024, 'w')), kRejected},
      {"a 7 KB workspaceId", query("workspaceId=" + std::string(7000, 'w')), 403},
      {"a query on a chat path", get(kChats + "/" + kUuid + "?workspaceId=%00", auth), 404},
      {"two question marks", query("workspaceId=" + ws + "?scope=active"), kRejected},
  };
  runCorpus(server, corpus);
  // Nothing was dropped or changed: the tables and the caller's row are where they were.
  CHECK(sql.value("SELECT count(*) FROM workspaces WHERE id = $1", {ws}) == std::optional<std::string>("1"));
  CHECK(sql.value("SELECT to_regclass('copilot_chats')::text").has_value());
  CHECK(server.get(chatListPath(ws), caller.token).json()["data"].size() == 1);
  checkAfterCorpus(server, {caller.token, ws});
}

TEST_CASE("hostile: tokens and headers: SQL, CR LF injection, NUL, oversized, repeated", "[server][hostile]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto path = list("workspaceId=" + caller.workspaceId);
  const auto& token = caller.token;
  // Tokens that must never appear in the log, valid or not.
  const std::string canary = "tok_canary_5d1f9c0e7b";
  const auto withHeaders = [&](const std::string& headers) { return get(path, headers); };

  const std::vector<Case> corpus{
      {"the caller's token (control)", withHeaders(bearer(token)), 200},
      {"scheme in lower case", withHeaders("Authorization: bearer " + token + "\r\n"), 200},
      {"quote, OR 1=1, comment", withHeaders(bearer("' OR 1=1 --")), 401},
      {"a quote and a semicolon", withHeaders(bearer(canary + "';DROP TABLE api_keys;--")), 401},
      {"an escaped quote (httplib decodes header values)", withHeaders(bearer(canary + "%27%20OR%20%271%27%3D%271")), 401},
      {"the caller's token and a comment", withHeaders(bearer(token + "--")), 401},
      {"CR LF escaped in the token", withHeaders(bearer(canary + "%0d%0aX-Injected:%201")), 401},
      {"the caller's token and an escaped CR LF", withHeaders(bearer(token + "%0d%0a")), 401},
      {"a raw CR in the token", withHeaders(bearer(canary + "\rX-Injected: 1")), 401},
      {"a stray LF-only line after the token's", withHeaders(bearer(token) + "\nX: 1\r\n"), kRejected},
      {"a raw LF inside the header line", withHeaders("Authorization: Bearer " + token + "\nX-Injected: 1\r\n"), kRejected},
      {"a NUL in the token (raw)", withHeaders(bearer(canary + std::string(1, '\0') + "x")), 401},
      {"a NUL in the token (%00)", withHeaders(bearer(token + "%00")), 401},
      {"the caller's token and a trailing space (%20)", withHeaders(bearer(token + "%20")), 401},
      {"a tab for a space", withHeaders("Authorization: Bearer\t" + token + "\r\n"), 401},
      {"two spaces", withHeaders("Authorization: Bearer  " + token + "\r\n"), 401},
      {"non-ASCII", withHeaders(bearer(canary + "\xc3\xa9")), 401},
      {"another scheme", withHeaders("Authorization: Basic " + canary + "\r\n"), 401},
      {"two Authorization headers", withHeaders(bearer(token) + bearer(token)), 401},
      {"a 1 KB + 1 token", withHeaders(bearer(std::string(1025, 't'))), 401},
      {"an 8 KB token", withHeaders(bearer(std::string(8000, 't'))), 401},
      {"a 100 KB Authorization header", withHeaders(bearer(std::string(100 * 1024, 't'))), kRejected},
      {"a 100 KB other header", withHeaders(bearer(token) + "X-Big: " + std::string(100 * 1024, 'x') + "\r\n"),
       kRejected},
      {"3,000 headers (300 KB)", withHeaders(bearer(token) + repeat("X-Many: " + std::string(90, 'm') + "\r\n", 3000)),
       kRejected},
      {"1 MB header line without an end", "GET /healthz HTTP/1.1\r\nX-Flood: " + std::string(1024 * 1024, 'f'),
       kRejected},
      {"a header without a colon", withHeaders(bearer(token) + "NoColonHere\r\n"), kRejected},
      {"a folded header (obs-fold)", withHeaders(bearer(token) + "X-A: 1\r\n folded\r\n"), kRejected},
      {"a header name with a NUL", withHeaders(bearer(token) + std::string("X-\0A: 1\r\n", 9)), kRejected},
      {"CR LF in the request target", "GET /healthz\r\nX-Injected: 1 HTTP/1.1\r\n\r\n", kRejected},
      {"Range with 2,700 ranges on the page", get("/", "Range: bytes=0-" + repeat(",0-", 2700) + "\r\n"), 200},
      {"an invalid Range", get("/healthz", "Range: bytes=z-\r\n"), 200},
  };
  runCorpus(server, corpus);
  // A Range header is ignored: the page is sent once and whole, never as 2,700 copies.
  const auto ranged = exchange(server.port(), get("/", "Range: bytes=0-" + repeat(",0-", 2700) + "\r\n"));
  CHECK(ranged.raw.size() < 64 * 1024);
  CHECK(ranged.head.find("multipart/byteranges") == std::string::npos);
  checkAfterCorpus(server, {token, canary});
}

TEST_CASE("hostile: methods, versions, framing and absurd Content-Length", "[server][hostile]") {
  Server server(sharedRedisFlags());
  Seed seed(TestDatabase::get().sql());
  const auto caller = newCaller(seed);
  const auto auth = bearer(caller.token);
  const auto listPath = list("workspaceId=" + caller.workspaceId);
  const auto withBody = [](const std::string& method, const std::string& target, const std::string& body) {
    return request(method, target, "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) + "\r\n",
                   body);
  };

  const std::vector<Case> corpus{
      {"POST with a body", withBody("POST", kChats, "{\"a\":1}"), 405},
      {"PUT with a body", withBody("PUT", kChats + "/" + kUuid, "x"), 405},
      {"DELETE with a body", withBody("DELETE", kChats + "/" + kUuid, "x"), 405},
      {"PATCH with a body", withBody("PATCH", "/healthz", "x"), 405},
      {"POST to an unknown path", withBody("POST", "/elsewhere", "x"), 404},
      {"POST with 64 KB", withBody("POST", kChats, std::string(64 * 1024, 'x')), 405},
      {"POST with 1 MB", withBody("POST", kChats, std::string(1024 * 1024, 'x')), 405},
      {"POST, multipart", request("POST", kChats, "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 60\r\n",
                                  "--b\r\nContent-Disposition: form-data; name=\"" + std::string(30, 'n')), 405},
      {"POST, chunked with an absurd chunk", request("POST", kChats, "Transfer-Encoding: chunked\r\n", "ffffffffffffffffff\r\nx"),
       405},
      {"OPTIONS", request("OPTIONS", kChats), 405},
      {"TRACE", request("TRACE", "/healthz", "X-Echo: 1\r\n"), 405},
      {"CONNECT", request("CONNECT", "127.0.0.1:5432"), 404},
      {"HEAD", request("HEAD", "/healthz"), 200},
      {"an unknown method", request("FOO", "/healthz"), 400},
      {"a method in lower case", request("get", "/healthz"), 400},
      {"HTTP/1.0", request("GET", listPath, auth, {}, "HTTP/1.0"), 200},
      {"HTTP/1.0 without Host", "GET /healthz HTTP/1.0\r\n\r\n", 200},
      {"HTTP/2.0", request("GET", "/healthz", {}, {}, "HTTP/2.0"), 400},
      {"HTTP/0.9", "GET /healthz\r\n\r\n", 400},
      {"no version", "GET /healthz \r\n\r\n", 400},
      {"LF-only line ends", "GET /healthz HTTP/1.1\nConnection: close\n\n", kRejected},
      {"an empty request line", "\r\n\r\n", 400},
      {"binary garbage (a TLS hello)", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11) +
                                          std::string(500, '\0') + "\r\n\r\n", kRejected},
      {"Content-Length: 99999999999999999999999", get("/healthz", "Content-Length: 99999999999999999999999\r\n"), 400},
      {"Content-Length: 18446744073709551616", get("/healthz", "Content-Length: 18446744073709551616\r\n"), 400},
      {"Content-Length: -1", get("/healthz", "Content-Length: -1\r\n"), 400},
      {"Content-Length: 1e9", get("/healthz", "Content-Length: 1e9\r\n"), 400},
      {"Content-Length: 0x10", get("/healthz", "Content-Length: 0x10\r\n"), 400},
      {"Content-Length empty-ish", get("/healthz", "Content-Length: +5\r\n"), 400},
      {"two Content-Lengths that differ", get("/healthz", "Content-Length: 1\r\nContent-Length: 2\r\n") + "xy", 400},
      {"Content-Length and Transfer-Encoding", request("POST", kChats, "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                                                       "0\r\n\r\n"), 400},
      {"a huge Content-Length with Expect: 100-continue",
       request("POST", kChats, "Content-Length: 99999999999\r\nExpect: 100-continue\r\n"), 405},
      {"Content-Length larger than the body sent", request("POST", kChats, "Content-Length: 30\r\n", "abc"), 405},
      {"Content-Length: 0 on a GET", get("/healthz", "Content-Length: 0\r\n"), 200},
      {"a GET with a body", get("/healthz", "Content-Length: 5\r\n") + "hello", 200},
  };
  runCorpus(server, corpus);

  // A body that the server does not read is never taken for the next request: the connection is
  // closed after the answer (here kept alive by the client, so only the server can close it).
  const std::string smuggled = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  const auto answer = exchange(server.port(), "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " +
                                                  std::to_string(smuggled.size()) + "\r\n\r\n" + smuggled);
  checkAnswer(answer);
  CHECK(answer.status == 200);
  CHECK(answer.responses == 1);
  CHECK(answer.closed);
  checkAfterCorpus(server, {caller.token});
}

TEST_CASE("hostile: clients that stall or trickle mid-request do not starve a normal request", "[server][hostile][slow]") {
  // Few threads, three times as many slow clients.
  Server server({"--threads", "16", "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  std::vector<int> stalled;
  for (int i = 0; i < 40; ++i) {
    stalled.push_back(connectTo(server.port()));
    send(stalled.back(), "GET /heal", 9, MSG_NOSIGNAL);  // a partial request line, then nothing
  }
  std::vector<int> trickling;
  for (int i = 0; i < 10; ++i) {
    trickling.push_back(connectTo(server.port()));
    const std::string start = "GET /healthz HTTP/1.1\r\nX-Slow: ";
    send(trickling.back(), start.data(), start.size(), MSG_NOSIGNAL);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {  // one more byte on each trickling connection every 300 ms
    while (!stop) {
      for (const int fd : trickling) send(fd, "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(milliseconds{300});
    }
  });
  std::this_thread::sleep_for(milliseconds{300});

  const auto start = Clock::now();
  const auto answer = exchange(server.port(), get("/healthz"), seconds{20});
  const auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  // Every stalled client is cut off by the server (request deadline), not left holding a thread.
  int cut = 0;
  const auto cutBy = Clock::now() + seconds{15};
  for (const int fd : stalled) cut += closedByServer(fd, cutBy) ? 1 : 0;
  stop = true;
  trickle.join();
  int trickleCut = 0;
  for (const int fd : trickling) trickleCut += closedByServer(fd, cutBy + seconds{5}) ? 1 : 0;
  for (const int fd : stalled) close(fd);
  for (const int fd : trickling) close(fd);

  INFO("normal request answered after " << waited.count() << " ms");
  checkAnswer(answer);
  CHECK(answer.status == 200);
  CHECK(waited < seconds{15});  // generous: typically about a second
  CHECK(cut == 40);
  CHECK(trickleCut == 10);
  checkAfterCorpus(server, {});
}

TEST_CASE("hostile: 400 idle connections against 64 threads: a normal request is still served", "[server][hostile][slow]") {
  Server server({"--threads", "64", "--redis-url", requireEnv("STREAMLOCK_TEST_REDIS_URL")});
  std::vector<int> idle;
  for (int i = 0; i < 400; ++i) idle.push_back(connectTo(server.port()));
  std::this_thread::sleep_for(milliseconds{200});

  // Answered, or refused with a clean 503 while the idle ones are shed; never left hanging.
  const auto start = Clock::now();
  Answer answer;
  int refused = 0;
  while (Clock::now() - start < seconds{30}) {
    answer = exchange(server.port(), get("/healthz"), seconds{20});
    checkAnswer(answer);
    if (answer.status != 503) break;
    ++refused;
    std::this_thread::sleep_for(milliseconds{100});
  }
  const auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  const auto [rssKb, threads] = memoryAndThreads(server.process().pid());
  // The idle connections were given up (closed by the server), not kept holding threads.
  int closedIdle = 0;
  const auto closedBy = Clock::now() + seconds{10};
  for (const int fd : idle) closedIdle += closedByServer(fd, closedBy) ? 1 : 0;
  for (const int fd : idle) close(fd);

  INFO("answered " << answer.status << " after " << waited.count() << " ms and " << refused << " 503s; RSS "
                   << rssKb << " kB, " << threads << " threads, " << closedIdle << " idle connections closed");
  CHECK(answer.status == 200);
  CHECK(waited < seconds{15});
  CHECK(closedIdle == 400);
  CHECK(threads <= 64 + 32);  // the pool, not a thread per connection
  CHECK(rssKb < 300 * 1024);
  checkAfterCorpus(server, {});
}
