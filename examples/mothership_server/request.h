#pragma once

// Pure request parsing for mothership_server: route matching, the bearer token, the list route's
// query form. No I/O, no httplib, no allocation beyond the returned strings, never throws except
// std::bad_alloc; every function takes arbitrary bytes (tests/fuzz/fuzz_request.cpp feeds them).

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mothership {

enum class Route { Page, Health, Metrics, ChatList, Chat, Unmatched };

struct RouteMatch {
  Route route = Route::Unmatched;
  std::string_view chatId;  // Route::Chat only: a view into the matched path, non-empty, no '/'
};

// Longest path that is routed at all; a longer one is Unmatched before any other look at it.
// (httplib already answers 414 to a request line over 8 KiB; this bound does not rely on it.)
constexpr std::size_t kMaxPathLength = 8192;

// Matches a decoded request path by hand (no std::regex over untrusted input). Any bytes.
RouteMatch matchRoute(std::string_view path) noexcept;

// What logs and metrics call a route: its template, never the raw path. One of
// "/", "/healthz", "/metrics", "/api/mothership/chats", "/api/mothership/chats/{chatId}", "unmatched".
const char* routeTemplate(Route route) noexcept;

constexpr std::size_t kMaxTokenLength = 1024;

// The token of one "Authorization: Bearer <token>" header value (scheme case-insensitive);
// nullopt when malformed: another scheme, an empty or over-long token, or any byte outside
// printable ASCII (space, control bytes, CR/LF, NUL, non-ASCII). The token is never compared here:
// it is only ever compared in SQL, by its SHA-256.
std::optional<std::string> parseBearerToken(std::string_view authorization);

// Percent-decoding exactly as cpp-httplib 0.11's detail::decode_url: %XX, %uXXXX (as UTF-8; a
// surrogate is dropped), a malformed or truncated escape kept literally, '+' as a space when asked.
std::string decodeUrlComponent(std::string_view text, bool plusAsSpace);

// The query string of a request target: after the first '?', before any '#'; empty when none.
std::string_view queryOf(std::string_view target) noexcept;

// The query grammar both counting and reading use (so that they cannot disagree): pairs separated
// by '&'; a pair's name is what precedes its first '=' (the whole pair when it has none), its value
// what follows; both percent-decoded with '+' as a space. A pair with an empty raw name is ignored.
// How many pairs of `query` are named `key` (after decoding).
std::size_t queryKeyCount(std::string_view query, std::string_view key);
// The decoded value of the first pair named `key`; nullopt when there is none.
std::optional<std::string> queryValue(std::string_view query, std::string_view key);

// The list route's form, from its query string. Contract order: error (400) is checked by the
// caller after authentication; noSuchWorkspace (403) after that.
struct ListForm {
  std::string workspaceId;
  bool archived = false;         // scope=archived (default: active)
  const char* error = nullptr;   // the request's form is wrong: 400 with this message
  bool noSuchWorkspace = false;  // workspaceId can name no workspace (a NUL byte or invalid
                                 // UTF-8, which PostgreSQL text cannot hold): 403 without a query
};
ListForm readListForm(std::string_view query);

// Whether a Content-Length header value is one a request may carry: 1 to 18 ASCII digits (no
// sign, no space, no hex, nothing that overflows 64 bits). Any other value is a framing error.
bool isValidContentLength(std::string_view value) noexcept;

// Whether PostgreSQL can hold `text` in a text column: valid UTF-8 (no overlong forms, no
// surrogates, nothing past U+10FFFF) without a NUL byte.
bool isStorableText(std::string_view text) noexcept;

}  // namespace mothership
