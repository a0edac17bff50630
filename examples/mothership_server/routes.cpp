#include "routes.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <streamlock/client.h>
#include <streamlock/error.h>
#include <streamlock/metrics.h>

#include "log.h"
#include "metrics.h"
#include "page.h"
#include "queries.h"
#include "request.h"

namespace mothership {
namespace {

using Json = nlohmann::ordered_json;  // keeps the contract's key order

constexpr auto kJson = "application/json";

std::string dump(const Json& json) { return json.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Whether any of the 8 bytes of word needs escaping in a JSON string: a control byte (< 0x20), '"'
// or '\\'. Bytes >= 0x80 (UTF-8) never do. The classic "has a byte less than n" and "has a zero
// byte" word tricks; a word that has one goes to the byte loop, which finds it.
constexpr bool needsEscape(std::uint64_t word) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  const auto hasZero = [](std::uint64_t v) { return ((v - kOnes) & ~v & kHighs) != 0; };
  const bool control = ((word - kOnes * 0x20) & ~word & kHighs) != 0;
  return control || hasZero(word ^ (kOnes * '"')) || hasZero(word ^ (kOnes * '\\'));
}

// The position of the first byte of text at or after `from` that a JSON string must escape, or
// text.size(): 16 bytes per step with SSE2 (every x86-64), then 8 with needsEscape, then one.
std::size_t firstToEscape(std::string_view text, std::size_t from) {
  std::size_t i = from;
#if defined(__SSE2__)
  const __m128i lastControl = _mm_set1_epi8(0x1f);
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  while (text.size() - i >= 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text.data() + i));
    // Unsigned bytes <= 0x1f are those whose maximum with 0x1f is 0x1f.
    const __m128i control = _mm_cmpeq_epi8(_mm_max_epu8(bytes, lastControl), lastControl);
    const __m128i special = _mm_or_si128(_mm_cmpeq_epi8(bytes, quote), _mm_cmpeq_epi8(bytes, backslash));
    const int mask = _mm_movemask_epi8(_mm_or_si128(control, special));
    if (mask != 0) return i + static_cast<std::size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
    i += 16;
  }
#endif
  while (text.size() - i >= 8) {
    std::uint64_t word;
    std::memcpy(&word, text.data() + i, sizeof word);
    if (needsEscape(word)) break;
    i += 8;
  }
  for (; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == '"' || c == '\\') return i;
  }
  return i;
}

// JSON text written into a buffer with room made up front: each write is plain stores and memcpy,
// with one bounds check per call (and growth only when an estimate was short).
class JsonWriter {
 public:
  explicit JsonWriter(std::size_t estimate) : text_(std::max<std::size_t>(estimate, 64), '\0'), at_(text_.data()) {}

  void raw(std::string_view bytes) {
    room(bytes.size());
    std::memcpy(at_, bytes.data(), bytes.size());
    at_ += bytes.size();
  }

  // A JSON string of text read from PostgreSQL (valid UTF-8 in a UTF8 database): escapes '"',
  // '\\' and control characters exactly as nlohmann::json's dump() does, and copies the runs
  // between them whole.
  void string(std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    room(6 * text.size() + 2);  // the longest escape, \u00XX, is 6 bytes
    *at_++ = '"';
    std::size_t copied = 0;
    for (std::size_t i = firstToEscape(text, 0); i < text.size(); i = firstToEscape(text, copied)) {
      copy(text.substr(copied, i - copied));
      const auto c = static_cast<unsigned char>(text[i]);
      copied = i + 1;
      switch (c) {
        case '"': copy("\\\""); break;
        case '\\': copy("\\\\"); break;
        case '\b': copy("\\b"); break;
        case '\f': copy("\\f"); break;
        case '\n': copy("\\n"); break;
        case '\r': copy("\\r"); break;
        case '\t': copy("\\t"); break;
        default: {
          const char escape[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          copy({escape, sizeof escape});
        }
      }
    }
    copy(text.substr(copied));
    *at_++ = '"';
  }

  void stringOrNull(const std::optional<std::string_view>& text) {
    if (text) {
      string(*text);
    } else {
      raw("null");
    }
  }

  std::string take() && {
    text_.resize(static_cast<std::size_t>(at_ - text_.data()));
    return std::move(text_);
  }

 private:
  void copy(std::string_view bytes) {  // within room already made
    std::memcpy(at_, bytes.data(), bytes.size());
    at_ += bytes.size();
  }

  void room(std::size_t bytes) {
    const auto used = static_cast<std::size_t>(at_ - text_.data());
    if (text_.size() - used >= bytes) return;
    text_.resize(std::max(2 * text_.size(), used + bytes));
    at_ = text_.data() + used;
  }

  std::string text_;
  char* at_;
};

Json orNull(const std::optional<std::string>& value) { return value ? Json(*value) : Json(nullptr); }

// The body is moved into the response: httplib's set_content(std::string) copies it.
void setBody(httplib::Response& res, std::string body, const char* contentType) {
  res.body = std::move(body);
  res.set_header("Content-Type", contentType);
}

void sendJson(httplib::Response& res, int status, const Json& body) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  setBody(res, dump(body), kJson);
}

void sendError(httplib::Response& res, int status, const char* message) {
  sendJson(res, status, Json{{"error", message}});
}

void unauthorized(httplib::Response& res) {
  res.set_header("WWW-Authenticate", "Bearer");
  sendError(res, 401, "Unauthorized");
}

void chatNotFound(httplib::Response& res) {
  sendJson(res, 404, Json{{"success", false}, {"error", "Chat not found"}});
}

// A database failure: 503 when no pooled connection freed up in time, else the route's 500.
// The detail goes to the log, never into the body.
void databaseFailure(httplib::Response& res, const std::exception& error, const char* publicMessage) {
  const auto* libraryError = dynamic_cast<const streamlock::Error*>(&error);
  if (libraryError != nullptr && libraryError->code() == streamlock::ErrorCode::PoolExhausted) {
    res.set_header("Retry-After", "1");
    sendError(res, 503, "Service unavailable");
  } else {
    sendError(res, 500, publicMessage);
  }
  const char* code = libraryError != nullptr ? streamlock::toString(libraryError->code()) : "exception";
  examples::logLine(streamlock::LogLevel::Error, "database_failure",
                    fmt::format("mothership_server: database failure ({}): {}", code, error.what()),
                    {{"code", code}, {"message", error.what()}});
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

// ---- handlers ----

void servePage(httplib::Response& res) {
  res.status = 200;
  res.set_header("Cache-Control", "no-store");
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
  const auto page = tilePage();
  res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
}

void serveHealth(streamlock::Client& client, httplib::Response& res) {
  bool postgresUp = true;
  try {
    pingDatabase(*client.postgres(), std::chrono::milliseconds{1000});
  } catch (const std::exception&) {
    postgresUp = false;
  }
  const auto redis = client.redisStatus();
  // Degraded: Redis is configured but did not answer, so reads answer unknown (and repair nothing).
  const bool degraded = redis.mode == streamlock::RedisStatus::Mode::Unknown;
  sendJson(res, postgresUp ? 200 : 503,
           Json{{"status", !postgresUp ? "unavailable" : degraded ? "degraded" : "ok"},
                {"postgres", postgresUp ? "up" : "down"},
                {"redis", streamlock::toString(redis.mode)},
                {"breaker", streamlock::toString(redis.breaker)}});
}

void serveMetrics(streamlock::Client& client, const Metrics& metrics, httplib::Response& res) {
  res.status = 200;
  setBody(res, metrics.render(client.metrics()), "text/plain; version=0.0.4");
}

// Read the rows first, then reconcile their markers against the locks (repairing the stale ones),
// then answer: the contract's reader order.
void serveChatList(streamlock::Client& client, const httplib::Request& req, httplib::Response& res) {
  const auto token = bearerToken(req);
  if (!token) return unauthorized(res);
  // The form is read from the raw query string with one grammar for counting and reading the
  // parameters (request.h), never from httplib's parsed params, which fold and trim pairs.
  const auto form = readListForm(queryOf(req.target));
  const auto scope = form.archived ? Scope::Archived : Scope::Active;
  try {
    auto& db = *client.postgres();
    if (form.error != nullptr || form.noSuchWorkspace) {
      if (!isValidToken(db, *token)) return unauthorized(res);
      // A workspaceId that PostgreSQL text cannot hold (NUL, invalid UTF-8) names no workspace:
      // 403 as for any unknown workspace, without sending it to the database (where a NUL would
      // truncate it and invalid UTF-8 would fail the statement).
      if (form.error == nullptr) return sendError(res, 403, "Workspace access denied");
      return sendError(res, 400, form.error);
    }
    const auto list = listChats(db, *token, form.workspaceId, scope);
    if (list.access == Access::Unauthorized) return unauthorized(res);
    if (list.access == Access::Forbidden) return sendError(res, 403, "Workspace access denied");

    // Archived chats are not reconciled: they show no active stream.
    streamlock::ReconcileResult reconciled;
    if (scope == Scope::Active) {
      std::vector<streamlock::MarkerCandidate> candidates;
      candidates.reserve(list.chats.size());
      for (const auto& chat : list.chats) {
        candidates.push_back({std::string(chat.id),
                              chat.marker ? std::optional<std::string>(*chat.marker) : std::nullopt});
      }
      reconciled = client.reconcileChatStreamMarkers(candidates, {/*repair=*/true});
    }
    const auto activeStreamId = [&](std::size_t i) -> std::optional<std::string_view> {
      if (i >= reconciled.markers.size() || !reconciled.markers[i].streamId) return std::nullopt;
      return *reconciled.markers[i].streamId;
    };

    // Built by hand: a DOM of 50 ordered_json objects cost a third of the request's CPU.
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
    std::string body = std::move(json).take();
    res.status = 200;
    res.set_header("Cache-Control", "no-store");
    setBody(res, std::move(body), kJson);
  } catch (const std::exception& error) {
    databaseFailure(res, error, "Failed to fetch chats");
  }
}

void serveChat(streamlock::Client& client, std::string_view chatId, const httplib::Request& req,
               httplib::Response& res) {
  const auto token = bearerToken(req);
  if (!token) return unauthorized(res);
  try {
    auto& db = *client.postgres();
    if (!isUuid(chatId)) return isValidToken(db, *token) ? chatNotFound(res) : unauthorized(res);
    const auto lookup = findChat(db, *token, std::string(chatId));
    if (!lookup.authenticated) return unauthorized(res);
    if (!lookup.chat) return chatNotFound(res);
    const auto& chat = *lookup.chat;

    const auto reconciled = client.reconcileChatStreamMarkers({{chat.id, chat.marker}}, {/*repair=*/true});
    const std::optional<std::string> activeStreamId =
        reconciled.markers.empty() ? std::nullopt : reconciled.markers.front().streamId;

    // messages and resources are spliced in as stored: jsonb's text is JSON, and re-parsing it
    // could round large numbers.
    std::string body = R"({"success":true,"chat":{"id":)" + dump(chat.id);
    body += R"(,"title":)" + dump(orNull(chat.title));
    body += R"(,"messages":)" + chat.messagesJson;
    body += R"(,"activeStreamId":)" + dump(orNull(activeStreamId));
    body += R"(,"resources":)" + chat.resourcesJson;
    body += R"(,"createdAt":)" + dump(chat.createdAt);
    body += R"(,"updatedAt":)" + dump(chat.updatedAt) + "}}";
    res.status = 200;
    res.set_header("Cache-Control", "no-store");
    setBody(res, std::move(body), kJson);
  } catch (const std::exception& error) {
    databaseFailure(res, error, "Failed to fetch chat");
  }
}

void logAccess(const httplib::Request& req, const char* route, int status, double seconds) {
  // The raw path and the headers are never logged: they can carry ids and tokens.
  examples::logAccess(req.method, route, status, seconds);
}

}  // namespace

void Router::handle(const httplib::Request& req, httplib::Response& res) const {
  const auto start = std::chrono::steady_clock::now();
  const auto match = matchRoute(req.path);
  try {
    if (match.route == Route::Unmatched) {
      sendError(res, 404, "Not found");
    } else if (req.method != "GET" && req.method != "HEAD") {
      res.set_header("Allow", "GET, HEAD");
      sendError(res, 405, "Method not allowed");
    } else {
      switch (match.route) {
        case Route::Page: servePage(res); break;
        case Route::Health: serveHealth(client_, res); break;
        case Route::Metrics: serveMetrics(client_, metrics_, res); break;
        case Route::ChatList: serveChatList(client_, req, res); break;
        case Route::Chat: serveChat(client_, match.chatId, req, res); break;
        case Route::Unmatched: break;
      }
    }
  } catch (const std::exception& error) {
    examples::logLine(streamlock::LogLevel::Error, "internal_error",
                      fmt::format("mothership_server: internal error: {}", error.what()), {{"message", error.what()}});
    sendError(res, 500, "Internal server error");
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  const char* route = routeTemplate(match.route);
  metrics_.observe(route, res.status, elapsed.count());
  logAccess(req, route, res.status, elapsed.count());
}

bool Router::completeLibraryError(const httplib::Request& req, httplib::Response& res) const {
  if (!res.body.empty()) return false;
  // A request with a body is left to httplib, which reads the body before it finds no route;
  // route it now, as any other request.
  if (res.status == 404) {
    res.status = -1;
    handle(req, res);
    return true;
  }
  const int status = res.status;
  const char* message = status == 413 ? "Payload too large" : status == 414 ? "URI too long" : "Bad request";
  sendError(res, status, message);
  metrics_.observe(routeTemplate(Route::Unmatched), status, 0.0);
  logAccess(req, routeTemplate(Route::Unmatched), status, 0.0);
  return true;
}

}  // namespace mothership
