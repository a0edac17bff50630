#include "routes.h"

#include <chrono>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <streamlock/client.h>
#include <streamlock/error.h>
#include <streamlock/metrics.h>

#include "http/responder.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "page.h"
#include "queries.h"
#include "request.h"

namespace mothership {
namespace {

constexpr auto kJson = "application/json";
constexpr auto kListFailed = "Failed to fetch chats";
constexpr auto kChatFailed = "Failed to fetch chat";

// ---- replies ----

// What a route answers. The two chat routes make theirs in the library's completions, on its I/O
// thread (main.cpp's inline executor), where nothing may block: they deliver it to the HTTP event
// loop (http/responder.h), which writes it into httplib's Response and logs what went wrong.
struct Reply {
  int status = 500;
  std::string body;
  bool askForBearer = false;  // 401: WWW-Authenticate: Bearer
  bool retryLater = false;    // 503: Retry-After: 1
  // A database failure, for the log. Its text is copied: a copy of the Error itself would share its
  // reference-counted message with the one the library destroys on its own thread.
  std::optional<std::pair<streamlock::ErrorCode, std::string>> failure;
};

Reply jsonReply(int status, std::string body) {
  Reply reply;
  reply.status = status;
  reply.body = std::move(body);
  return reply;
}

Reply errorReply(int status, std::string_view message) { return jsonReply(status, errorBody(message)); }

Reply unauthorized() {
  Reply reply = errorReply(401, "Unauthorized");
  reply.askForBearer = true;
  return reply;
}

Reply chatNotFound() { return jsonReply(404, R"({"success":false,"error":"Chat not found"})"); }

// A database failure: 503 when no pooled connection freed up in time, else the route's 500. The
// detail goes to the log, never into the body.
Reply databaseFailure(const streamlock::Error& error, const char* publicMessage) {
  Reply reply;
  if (error.code() == streamlock::ErrorCode::PoolExhausted) {
    reply = errorReply(503, "Service unavailable");
    reply.retryLater = true;
  } else {
    reply = errorReply(500, publicMessage);
  }
  reply.failure.emplace(error.code(), std::string(error.what()));
  return reply;
}

// On the HTTP loop thread: the reply into httplib's Response (the body is moved: set_content copies),
// and its failure into the log.
void respond(Reply reply, httplib::Response& res) {
  res.status = reply.status;
  res.set_header("Cache-Control", "no-store");
  if (reply.askForBearer) res.set_header("WWW-Authenticate", "Bearer");
  if (reply.retryLater) res.set_header("Retry-After", "1");
  res.body = std::move(reply.body);
  res.set_header("Content-Type", kJson);
  if (reply.failure) {
    const char* code = streamlock::toString(reply.failure->first);
    const std::string& message = reply.failure->second;
    examples::logLine(streamlock::LogLevel::Error, "database_failure",
                      fmt::format("mothership_server: database failure ({}): {}", code, message),
                      {{"code", code}, {"message", message}});
  }
}

// ---- answering later ----

// What every answered request goes through: its reply into the Response, then counted and logged
// by route template. On the HTTP (event loop) thread.
struct Finish {
  Metrics& metrics;
  const char* route;
  std::string method;
  std::chrono::steady_clock::time_point start;

  void account(int status) const {
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    metrics.observe(route, status, elapsed.count());
    // The raw path and the headers are never logged: they can carry ids and tokens.
    examples::logAccess(method, route, status, elapsed.count());
  }
  void operator()(httplib::Response& res, Reply reply) const {
    respond(std::move(reply), res);
    account(res.status);
  }
};

// One request's reply, made on the library's I/O thread (or at once), delivered once to the HTTP
// layer; a promise dropped without a reply (a completion that threw, or that was destroyed
// uncalled) delivers 500, so that no request waits for ever.
class Answer {
 public:
  Answer(Deliver deliver, Finish finish) : deliver_(std::move(deliver)), finish_(std::move(finish)) {}
  ~Answer() {
    if (!done_) set(errorReply(500, "Internal server error"));
  }
  Answer(const Answer&) = delete;
  Answer& operator=(const Answer&) = delete;

  void set(Reply reply) noexcept {
    if (done_) return;
    done_ = true;
    try {
      deliver_([reply = std::move(reply), finish = finish_](httplib::Response& res) mutable { finish(res, std::move(reply)); });
    } catch (const std::exception&) {
      // Out of memory: nothing more can be done for this request.
    }
  }

 private:
  Deliver deliver_;
  Finish finish_;
  bool done_ = false;
};

using ReplyPromise = std::shared_ptr<Answer>;

// ---- bodies ----

std::vector<streamlock::MarkerCandidate> candidatesOf(const ChatList& list) {
  std::vector<streamlock::MarkerCandidate> candidates;
  candidates.reserve(list.chats.size());
  for (const auto& chat : list.chats) {
    candidates.push_back({std::string(chat.id), chat.marker ? std::optional<std::string>(*chat.marker) : std::nullopt});
  }
  return candidates;
}

// The list's body; reconciled is null for archived chats, which show no active stream.
std::string listBody(const ChatList& list, const streamlock::ReconcileResult* reconciled) {
  const auto activeStreamId = [&](std::size_t i) -> std::optional<std::string_view> {
    if (reconciled == nullptr || i >= reconciled->markers.size() || !reconciled->markers[i].streamId) {
      return std::nullopt;
    }
    return *reconciled->markers[i].streamId;
  };
  JsonWriter json(64 + list.chats.size() * 256);
  json.raw(R"({"success":true,"data":[)");
  for (std::size_t i = 0; i < list.chats.size(); ++i) {
    const auto& chat = list.chats[i];
    json.raw(i > 0 ? R"(,{"id":)" : R"({"id":)");
    json.string(chat.id);
    json.raw(R"(,"title":)");
    json.stringOrNull(chat.title);
    json.raw(R"(,"updatedAt":)");
    json.string(chat.updatedAt);
    json.raw(R"(,"activeStreamId":)");
    json.stringOrNull(activeStreamId(i));
    json.raw(R"(,"lastSeenAt":)");
    json.stringOrNull(chat.lastSeenAt);
    json.raw(chat.pinned ? R"(,"pinned":true,"deletedAt":)" : R"(,"pinned":false,"deletedAt":)");
    json.stringOrNull(chat.deletedAt);
    json.raw("}");
  }
  json.raw("]}");
  return std::move(json).take();
}

// messages and resources are spliced in as stored: jsonb's text is JSON, and re-parsing it could
// round large numbers.
std::string chatBody(const ChatDetail& chat, const std::optional<std::string>& activeStreamId) {
  JsonWriter json(160 + chat.messagesJson.size() + chat.resourcesJson.size());
  json.raw(R"({"success":true,"chat":{"id":)");
  json.string(chat.id);
  json.raw(R"(,"title":)");
  json.stringOrNull(chat.title);
  json.raw(R"(,"messages":)");
  json.raw(chat.messagesJson);
  json.raw(R"(,"activeStreamId":)");
  json.stringOrNull(activeStreamId ? std::optional<std::string_view>(*activeStreamId) : std::nullopt);
  json.raw(R"(,"resources":)");
  json.raw(chat.resourcesJson);
  json.raw(R"(,"createdAt":)");
  json.string(chat.createdAt);
  json.raw(R"(,"updatedAt":)");
  json.string(chat.updatedAt);
  json.raw("}}");
  return std::move(json).take();
}

// The token of "Authorization: Bearer <token>"; nullopt when the header is missing, repeated or
// malformed (request.h). httplib has percent-decoded the header value: a "%0d%0a" in it is CR LF here,
// and refused like any other control byte.
// The value is taken from the header map itself: httplib's get_header_value() goes through a C
// string and would cut "<token>%00junk" down to a valid "<token>".
std::optional<std::string> bearerToken(const httplib::Request& req) {
  const auto [first, last] = req.headers.equal_range("Authorization");
  if (first == last || std::next(first) != last) return std::nullopt;
  return parseBearerToken(first->second);
}

// ---- the two chat routes, through the library's completion forms ----
//
// Each is one statement (authentication, access and rows together), then for active chats one
// lookup with repair, then the body: the contract's reader order (the database before Redis, the
// repair before the answer). The completions run on the I/O thread and never block: they call only
// completion forms, and leave logging to the HTTP loop thread.

// A request whose form is wrong still authenticates first: 401 for a bad token, else `verdict`.
void authenticateThen(streamlock::PgPool& db, const std::string& token, Reply verdict, const char* publicMessage,
                      ReplyPromise promise) {
  auto statement = authenticateStatement(token);
  db.execute(std::move(statement.sql), std::move(statement.params),
             [promise, verdict = std::move(verdict), publicMessage](streamlock::Result<streamlock::PgResult> rows) {
               if (!rows) return promise->set(databaseFailure(*rows.error(), publicMessage));
               promise->set(readAuthenticated(rows.value()) ? verdict : unauthorized());
             });
}

void serveChatList(streamlock::Client& client, const httplib::Request& req, ReplyPromise promise) {
  const auto token = bearerToken(req);
  if (!token) return promise->set(unauthorized());
  // The form is read from the raw query string with one grammar for counting and reading the
  // parameters (request.h), never from httplib's parsed params, which fold and trim pairs.
  const auto form = readListForm(queryOf(req.target));
  auto& db = *client.postgres();
  if (form.error != nullptr) {
    return authenticateThen(db, *token, errorReply(400, form.error), kListFailed, std::move(promise));
  }
  // A workspaceId that PostgreSQL text cannot hold (NUL, invalid UTF-8) names no workspace: 403 as
  // for any unknown workspace, without sending it to the database (where a NUL would truncate it
  // and invalid UTF-8 would fail the statement).
  if (form.noSuchWorkspace) {
    return authenticateThen(db, *token, errorReply(403, "Workspace access denied"), kListFailed, std::move(promise));
  }

  const auto scope = form.archived ? Scope::Archived : Scope::Active;
  auto statement = listChatsStatement(*token, form.workspaceId, scope);
  db.execute(std::move(statement.sql), std::move(statement.params),
             [&client, promise, scope](streamlock::Result<streamlock::PgResult> rows) {
               if (!rows) return promise->set(databaseFailure(*rows.error(), kListFailed));
               auto list = std::make_shared<ChatList>(readChatList(std::move(rows).value()));
               if (list->access == Access::Unauthorized) return promise->set(unauthorized());
               if (list->access == Access::Forbidden) return promise->set(errorReply(403, "Workspace access denied"));
               if (scope == Scope::Archived) return promise->set(jsonReply(200, listBody(*list, nullptr)));
               client.reconcileChatStreamMarkers(candidatesOf(*list), {/*repair=*/true},
                                                 [promise, list](streamlock::ReconcileResult reconciled) {
                                                   promise->set(jsonReply(200, listBody(*list, &reconciled)));
                                                 });
             });
}

void serveChat(streamlock::Client& client, std::string_view chatId, const httplib::Request& req, ReplyPromise promise) {
  const auto token = bearerToken(req);
  if (!token) return promise->set(unauthorized());
  auto& db = *client.postgres();
  if (!isUuid(chatId)) return authenticateThen(db, *token, chatNotFound(), kChatFailed, std::move(promise));

  auto statement = findChatStatement(*token, std::string(chatId));
  db.execute(std::move(statement.sql), std::move(statement.params),
             [&client, promise](streamlock::Result<streamlock::PgResult> rows) {
               if (!rows) return promise->set(databaseFailure(*rows.error(), kChatFailed));
               auto lookup = std::make_shared<ChatLookup>(readChatLookup(std::move(rows).value()));
               if (!lookup->authenticated) return promise->set(unauthorized());
               if (!lookup->chat) return promise->set(chatNotFound());
               const auto& chat = *lookup->chat;
               std::vector<streamlock::MarkerCandidate> candidates{
                   {std::string(chat.id), chat.marker ? std::optional<std::string>(*chat.marker) : std::nullopt}};
               client.reconcileChatStreamMarkers(
                   std::move(candidates), {/*repair=*/true}, [promise, lookup](streamlock::ReconcileResult reconciled) {
                     const std::optional<std::string> activeStreamId =
                         reconciled.markers.empty() ? std::nullopt : reconciled.markers.front().streamId;
                     promise->set(jsonReply(200, chatBody(*lookup->chat, activeStreamId)));
                   });
             });
}

// ---- the other routes: at once on the HTTP loop thread, or (/healthz) on a blocking thread ----

void servePage(httplib::Response& res) {
  res.status = 200;
  res.set_header("Cache-Control", "no-store");
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
  const auto page = tilePage();
  res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
}

// Blocking calls (a SELECT 1 and a PING, each bounded): this runs on one of the HTTP layer's
// blocking threads (Responder::blocking), never on its loop and never in a completion.
// The contract's health body.
Reply healthReply(bool postgresUp, streamlock::RedisStatus::Mode redis, streamlock::BreakerState breaker) {
  // Degraded: Redis is configured but did not answer, so reads answer unknown (and repair nothing).
  const bool degraded = redis == streamlock::RedisStatus::Mode::Unknown;
  JsonWriter json;
  json.raw(R"({"status":)");
  json.string(!postgresUp ? "unavailable" : degraded ? "degraded" : "ok");
  json.raw(R"(,"postgres":)");
  json.string(postgresUp ? "up" : "down");
  json.raw(R"(,"redis":)");
  json.string(streamlock::toString(redis));
  json.raw(R"(,"breaker":)");
  json.string(streamlock::toString(breaker));
  json.raw("}");
  return jsonReply(postgresUp ? 200 : 503, std::move(json).take());
}

Reply health(streamlock::Client& client) {
  bool postgresUp = true;
  try {
    pingDatabase(*client.postgres(), std::chrono::milliseconds{1000});
  } catch (const std::exception&) {
    postgresUp = false;
  }
  const auto redis = client.redisStatus();
  return healthReply(postgresUp, redis.mode, redis.breaker);
}

// /healthz when every blocking thread is taken and 64 more wait (PostgreSQL hangs, or a flood):
// answered at once, in the contract's form, without a check. PostgreSQL could not be checked in
// time, so it is reported down (503), Redis unknown, and the breaker as it stands.
Reply healthUnchecked(streamlock::Client& client) {
  Reply reply = healthReply(false, streamlock::RedisStatus::Mode::Unknown, client.metrics().breaker);
  reply.retryLater = true;
  return reply;
}

void serveMetrics(streamlock::Client& client, const Metrics& metrics, httplib::Response& res) {
  res.status = 200;
  res.body = metrics.render(client.metrics());
  res.set_header("Content-Type", "text/plain; version=0.0.4");
}

}  // namespace

void Router::handle(const httplib::Request& req, httplib::Response& res, Responder& responder) const {
  const auto match = matchRoute(req.path);
  const Finish finish{metrics_, routeTemplate(match.route), req.method, std::chrono::steady_clock::now()};
  ReplyPromise promise;  // set once the route answers later
  try {
    if (match.route == Route::Unmatched) {
      finish(res, errorReply(404, "Not found"));
    } else if (req.method != "GET" && req.method != "HEAD") {
      res.set_header("Allow", "GET, HEAD");
      finish(res, errorReply(405, "Method not allowed"));
    } else if (match.route == Route::Page) {
      servePage(res);
      finish.account(res.status);
    } else if (match.route == Route::Metrics) {
      serveMetrics(client_, metrics_, res);
      finish.account(res.status);
    } else {
      promise = std::make_shared<Answer>(responder.later(), finish);
      switch (match.route) {
        case Route::Health:
          responder.blocking([&client = client_, promise](bool refused) {
            promise->set(refused ? healthUnchecked(client) : health(client));
          });
          break;
        case Route::ChatList: serveChatList(client_, req, promise); break;
        case Route::Chat: serveChat(client_, match.chatId, req, promise); break;
        default: break;  // answered above
      }
    }
  } catch (const std::exception& error) {
    examples::logLine(streamlock::LogLevel::Error, "internal_error",
                      fmt::format("mothership_server: internal error: {}", error.what()), {{"message", error.what()}});
    if (promise) {
      promise->set(errorReply(500, "Internal server error"));
    } else {
      finish(res, errorReply(500, "Internal server error"));
    }
  }
}

bool Router::completeLibraryError(const httplib::Request& req, httplib::Response& res) const {
  if (!res.body.empty()) return false;
  const int status = res.status;
  const char* message = status == 413 ? "Payload too large" : status == 414 ? "URI too long" : "Bad request";
  const Finish finish{metrics_, routeTemplate(Route::Unmatched), req.method, std::chrono::steady_clock::now()};
  finish(res, errorReply(status, message));
  return true;
}

}  // namespace mothership
