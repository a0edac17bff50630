#include "request.h"

namespace mothership {
namespace {

constexpr std::string_view kChatsPath = "/api/mothership/chats";

bool equalsIgnoreCase(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

int hexValue(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// `count` hex digits at text[at...]; false when any is missing or not a hex digit.
bool hexAt(std::string_view text, std::size_t at, std::size_t count, int& value) noexcept {
  if (at > text.size() || text.size() - at < count) return false;
  value = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const int digit = hexValue(text[at + i]);
    if (digit < 0) return false;
    value = value * 16 + digit;
  }
  return true;
}

// A code point of 0..0xFFFF as UTF-8, as httplib's to_utf8: a surrogate yields nothing.
void appendUtf8(std::string& out, int code) {
  if (code < 0x80) {
    out += static_cast<char>(code);
  } else if (code < 0x800) {
    out += static_cast<char>(0xC0 | ((code >> 6) & 0x1F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  } else if (code >= 0xD800 && code < 0xE000) {
    // a surrogate: dropped
  } else {
    out += static_cast<char>(0xE0 | ((code >> 12) & 0xF));
    out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code & 0x3F));
  }
}

// Calls fn(rawName, rawValue) for each pair of the query grammar (see request.h), in order, until
// fn returns false.
template <typename Fn>
void forEachPair(std::string_view query, Fn fn) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    const auto name = pair.substr(0, eq);
    const auto value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    if (!name.empty() && !fn(name, value)) return;
    if (amp == std::string_view::npos) return;
    query.remove_prefix(amp + 1);
  }
}

}  // namespace

RouteMatch matchRoute(std::string_view path) noexcept {
  if (path.size() > kMaxPathLength) return {};
  if (path == "/") return {Route::Page, {}};
  if (path == "/healthz") return {Route::Health, {}};
  if (path == "/metrics") return {Route::Metrics, {}};
  if (path == kChatsPath) return {Route::ChatList, {}};
  if (path.size() > kChatsPath.size() + 1 && path.compare(0, kChatsPath.size(), kChatsPath) == 0 &&
      path[kChatsPath.size()] == '/') {
    const auto chatId = path.substr(kChatsPath.size() + 1);
    if (chatId.find('/') == std::string_view::npos) return {Route::Chat, chatId};
  }
  return {};
}

const char* routeTemplate(Route route) noexcept {
  switch (route) {
    case Route::Page: return "/";
    case Route::Health: return "/healthz";
    case Route::Metrics: return "/metrics";
    case Route::ChatList: return "/api/mothership/chats";
    case Route::Chat: return "/api/mothership/chats/{chatId}";
    case Route::Unmatched: break;
  }
  return "unmatched";
}

std::optional<std::string> parseBearerToken(std::string_view authorization) {
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization.size() <= kScheme.size() ||
      !equalsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  const auto token = authorization.substr(kScheme.size());
  if (token.size() > kMaxTokenLength) return std::nullopt;
  for (const char c : token) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte > '~') return std::nullopt;
  }
  return std::string(token);
}

std::string decodeUrlComponent(std::string_view text, bool plusAsSpace) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    int value = 0;
    if (c == '%' && i + 1 < text.size()) {
      if (text[i + 1] == 'u') {
        if (hexAt(text, i + 2, 4, value)) {
          appendUtf8(out, value);
          i += 5;
        } else {
          out += c;
        }
      } else if (hexAt(text, i + 1, 2, value)) {
        out += static_cast<char>(value);
        i += 2;
      } else {
        out += c;
      }
    } else if (plusAsSpace && c == '+') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string_view queryOf(std::string_view target) noexcept {
  const auto question = target.find('?');
  if (question == std::string_view::npos) return {};
  auto query = target.substr(question + 1);
  return query.substr(0, query.find('#'));
}

std::size_t queryKeyCount(std::string_view query, std::string_view key) {
  std::size_t count = 0;
  forEachPair(query, [&](std::string_view name, std::string_view) {
    if (decodeUrlComponent(name, true) == key) ++count;
    return true;
  });
  return count;
}

std::optional<std::string> queryValue(std::string_view query, std::string_view key) {
  std::optional<std::string> found;
  forEachPair(query, [&](std::string_view name, std::string_view value) {
    if (decodeUrlComponent(name, true) != key) return true;
    found = decodeUrlComponent(value, true);
    return false;
  });
  return found;
}

ListForm readListForm(std::string_view query) {
  ListForm form;
  if (queryKeyCount(query, "workspaceId") > 1 || queryKeyCount(query, "scope") > 1) {
    form.error = "workspaceId and scope may each be given once";
    return form;
  }
  form.workspaceId = queryValue(query, "workspaceId").value_or(std::string());
  if (form.workspaceId.empty()) {
    form.error = "workspaceId is required";
    return form;
  }
  if (const auto scope = queryValue(query, "scope")) {
    if (*scope == "archived") {
      form.archived = true;
    } else if (*scope != "active") {
      form.error = "scope must be active or archived";
      return form;
    }
  }
  form.noSuchWorkspace = !isStorableText(form.workspaceId);
  return form;
}

bool isValidContentLength(std::string_view value) noexcept {
  if (value.empty() || value.size() > 18) return false;
  for (const char c : value) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool isStorableText(std::string_view text) noexcept {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte == 0) return false;
    if (byte < 0x80) {
      ++i;
      continue;
    }
    std::size_t length = 0;
    unsigned char low = 0x80;  // the range of the second byte
    unsigned char high = 0xBF;
    if (byte >= 0xC2 && byte <= 0xDF) {
      length = 2;
    } else if (byte >= 0xE0 && byte <= 0xEF) {
      length = 3;
      if (byte == 0xE0) low = 0xA0;   // overlong
      if (byte == 0xED) high = 0x9F;  // surrogates
    } else if (byte >= 0xF0 && byte <= 0xF4) {
      length = 4;
      if (byte == 0xF0) low = 0x90;   // overlong
      if (byte == 0xF4) high = 0x8F;  // past U+10FFFF
    } else {
      return false;  // a continuation byte, an overlong lead (C0, C1) or F5..FF
    }
    if (text.size() - i < length) return false;
    const auto second = static_cast<unsigned char>(text[i + 1]);
    if (second < low || second > high) return false;
    for (std::size_t k = 2; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if (next < 0x80 || next > 0xBF) return false;
    }
    i += length;
  }
  return true;
}

}  // namespace mothership
