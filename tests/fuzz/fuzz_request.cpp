// libFuzzer target: mothership_server's pure request parsing (examples/mothership_server/request.h)
// on arbitrary bytes: a decoded path, a raw query string (or request target) and an Authorization
// header value, split from the input by FuzzedDataProvider (a backslash and any other byte end a
// part; "\\" is a backslash).
//
// Properties checked (a violation aborts, which libFuzzer reports as a crash):
// - matchRoute: the route's template is one of the six fixed ones; a fixed route matched its path
//   exactly; a chat id is a non-empty suffix of the path after "/api/mothership/chats/", a view
//   into the path itself, without '/'; a path over kMaxPathLength is never routed;
// - parseBearerToken: a token is 1..kMaxTokenLength printable non-space ASCII bytes, and the header
//   is "Bearer " (any case) followed by exactly the token;
// - decodeUrlComponent never lengthens its input and leaves text without '%' (and '+') alone;
// - queryOf returns a part of the target after its first '?';
// - readListForm: no error means exactly one workspaceId, non-empty and equal to queryValue's, at
//   most one scope, and noSuchWorkspace exactly when isStorableText says no; a repeated parameter
//   is always an error;
// - isStorableText agrees with an independent UTF-8 decoder; isValidContentLength with a plain
//   digits-and-length check.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "request.h"

namespace {

using namespace mothership;

[[noreturn]] void violated(const char* what, std::string_view input) {
  std::fprintf(stderr, "fuzz_request: %s\n  input (%zu bytes): %.*s\n", what, input.size(),
               static_cast<int>(input.size()), input.data());
  std::abort();
}

void check(bool ok, const char* what, std::string_view input) {
  if (!ok) violated(what, input);
}

bool lowerEquals(std::string_view text, std::string_view lower) {
  if (text.size() != lower.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i] >= 'A' && text[i] <= 'Z' ? static_cast<char>(text[i] - 'A' + 'a') : text[i];
    if (c != lower[i]) return false;
  }
  return true;
}

void checkRoute(std::string_view path) {
  const RouteMatch match = matchRoute(path);
  const std::string_view name = routeTemplate(match.route);
  static constexpr std::string_view kTemplates[] = {"/", "/healthz", "/metrics", "/api/mothership/chats",
                                                    "/api/mothership/chats/{chatId}", "unmatched"};
  bool known = false;
  for (const auto candidate : kTemplates) known = known || candidate == name;
  check(known, "a route template outside the fixed set", path);
  if (path.size() > kMaxPathLength) check(match.route == Route::Unmatched, "an over-long path was routed", path);

  switch (match.route) {
    case Route::Page:
    case Route::Health:
    case Route::Metrics:
    case Route::ChatList:
      check(path == name, "a fixed route matched another path", path);
      check(match.chatId.empty(), "a fixed route with a chat id", path);
      break;
    case Route::Chat: {
      constexpr std::string_view kPrefix = "/api/mothership/chats/";
      const auto& id = match.chatId;
      check(!id.empty(), "an empty chat id", path);
      check(id.data() >= path.data() && id.data() + id.size() == path.data() + path.size(),
            "the chat id is not a suffix view of the path", path);
      check(path.size() == kPrefix.size() + id.size() && path.substr(0, kPrefix.size()) == kPrefix,
            "the chat id does not follow the chats prefix", path);
      check(id.find('/') == std::string_view::npos, "a chat id with '/'", path);
      break;
    }
    case Route::Unmatched:
      check(match.chatId.empty(), "an unmatched path with a chat id", path);
      break;
  }
}

void checkToken(std::string_view header) {
  const auto token = parseBearerToken(header);
  if (!token) return;
  check(!token->empty() && token->size() <= kMaxTokenLength, "a token of a bad length", header);
  for (const char c : *token) {
    const auto byte = static_cast<unsigned char>(c);
    check(byte > ' ' && byte <= '~', "a token byte outside printable ASCII", header);
  }
  check(header.size() == 7 + token->size() && lowerEquals(header.substr(0, 7), "bearer ") &&
            header.substr(7) == *token,
        "the token is not exactly what follows \"Bearer \"", header);
}

void checkDecode(std::string_view text) {
  for (const bool plus : {false, true}) {
    const std::string decoded = decodeUrlComponent(text, plus);
    check(decoded.size() <= text.size(), "decoding lengthened the text", text);
    const bool plain = text.find('%') == std::string_view::npos && (!plus || text.find('+') == std::string_view::npos);
    if (plain) check(decoded == text, "decoding changed text without escapes", text);
  }
}

// An independent strict UTF-8 check (code points, not byte ranges), NUL excluded.
bool referenceStorable(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    std::size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || text.size() - i < length) return false;
    std::uint32_t code = length == 1 ? lead : length == 2 ? (lead & 0x1Fu) : length == 3 ? (lead & 0x0Fu) : (lead & 0x07u);
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0u) != 0x80u) return false;
      code = (code << 6) | (next & 0x3Fu);
    }
    static constexpr std::uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code == 0 || code < kMinimum[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

void checkText(std::string_view text) {
  check(isStorableText(text) == referenceStorable(text), "isStorableText disagrees with the reference", text);
  bool digits = !text.empty() && text.size() <= 18;
  for (const char c : text) digits = digits && c >= '0' && c <= '9';
  check(isValidContentLength(text) == digits, "isValidContentLength disagrees with the reference", text);
}

void checkForm(std::string_view target) {
  const auto query = queryOf(target);
  if (!query.empty()) {
    check(query.data() > target.data() && query.data() + query.size() <= target.data() + target.size() &&
              query.data()[-1] == '?' && target.find('?') == static_cast<std::size_t>(query.data() - target.data() - 1),
          "queryOf is not the part after the first '?'", target);
  }
  for (const auto text : {target, query}) {
    const ListForm form = readListForm(text);
    const auto workspaceIds = queryKeyCount(text, "workspaceId");
    const auto scopes = queryKeyCount(text, "scope");
    if (workspaceIds > 1 || scopes > 1) check(form.error != nullptr, "a repeated parameter was accepted", text);
    if (form.error != nullptr) continue;
    check(workspaceIds == 1 && scopes <= 1, "an accepted form without exactly one workspaceId", text);
    check(!form.workspaceId.empty(), "an accepted form with an empty workspaceId", text);
    check(queryValue(text, "workspaceId") == form.workspaceId, "readListForm and queryValue disagree", text);
    check(form.noSuchWorkspace == !isStorableText(form.workspaceId), "noSuchWorkspace is not !isStorableText", text);
    const auto scope = queryValue(text, "scope");
    check(form.archived == (scope && *scope == "archived"), "archived without scope=archived", text);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider provider(data, size);
  const std::string path = provider.ConsumeRandomLengthString(16 * 1024);
  const std::string target = provider.ConsumeRandomLengthString(16 * 1024);
  const std::string authorization = provider.ConsumeRemainingBytesAsString();

  checkRoute(path);
  checkForm(target);
  checkToken(authorization);
  for (const std::string_view text : {std::string_view(path), std::string_view(target), std::string_view(authorization)}) {
    checkDecode(text);
    checkText(text);
    checkText(decodeUrlComponent(text, true));
  }
  return 0;
}
