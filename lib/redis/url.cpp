#include "redis/url.h"

#include <cctype>
#include <string>

#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

[[noreturn]] void invalid(const std::string& why) {
  throw Error(ErrorCode::InvalidArgument, "invalid Redis URL: " + why);
}

bool startsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percentDecode(std::string_view text, const char* what) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    int high = i + 2 < text.size() ? hexValue(text[i + 1]) : -1;
    int low = i + 2 < text.size() ? hexValue(text[i + 2]) : -1;
    if (i + 2 >= text.size() || high < 0 || low < 0) {
      invalid(std::string("bad percent-encoding in the ") + what);
    }
    out += static_cast<char>(high * 16 + low);
    i += 2;
  }
  return out;
}

// Digits only, within [min, max].
int parseNumber(std::string_view text, int min, int max, const char* what) {
  if (text.empty() || text.size() > 10) invalid(std::string("bad ") + what);
  long long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') invalid(std::string("bad ") + what);
    value = value * 10 + (c - '0');
  }
  if (value < min || value > max) invalid(std::string(what) + " out of range");
  return static_cast<int>(value);
}

bool isHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
}

}  // namespace

RedisUrl parseRedisUrl(std::string_view url) {
  if (startsWithNoCase(url, "unix://") || startsWithNoCase(url, "redis+unix://")) {
    throw Error(ErrorCode::Unsupported, "Unix-socket Redis URLs are not supported; use redis://host:port");
  }
  RedisUrl out;
  std::string_view rest;
  if (startsWithNoCase(url, "redis://")) {
    rest = url.substr(8);
  } else if (startsWithNoCase(url, "rediss://")) {
    rest = url.substr(9);
    out.tls = true;
  } else {
    invalid("expected redis://[user:password@]host[:port][/db] or rediss://...");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) invalid("query parameters and fragments are not supported");
  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);

  std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    std::size_t colon = userinfo.find(':');
    out.user = percentDecode(userinfo.substr(0, colon), "user name");
    if (colon != std::string_view::npos) out.password = percentDecode(userinfo.substr(colon + 1), "password");
    if (!out.user.empty() && out.password.empty()) invalid("a user name needs a password (user:password@)");
  }

  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) invalid("unterminated IPv6 address");
    std::string_view address = authority.substr(1, close - 1);
    for (char c : address) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') invalid("bad IPv6 address");
    }
    out.host = std::string(address);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') invalid("unexpected text after the IPv6 address");
      port = after.substr(1);
      if (port.empty()) invalid("empty port");
    }
  } else {
    std::size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) invalid("empty port");
    }
    for (char c : out.host) {
      if (!isHostChar(c)) invalid("bad host name");
    }
  }
  if (out.host.empty()) invalid("missing host");
  if (!port.empty()) out.port = parseNumber(port, 1, 65535, "port");
  if (!path.empty()) out.db = parseNumber(path, 0, 1 << 20, "database number");
  return out;
}

std::string redactUrl(std::string_view url) {
  std::size_t schemeEnd = url.find("://");
  std::size_t start = schemeEnd == std::string_view::npos ? 0 : schemeEnd + 3;
  std::size_t authorityEnd = url.find_first_of("/?#", start);
  if (authorityEnd == std::string_view::npos) authorityEnd = url.size();
  std::size_t at = url.substr(0, authorityEnd).rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(url);
  std::size_t colon = url.substr(0, at).find(':', start);
  if (colon == std::string_view::npos) return std::string(url);
  std::string out(url.substr(0, colon + 1));
  out += "***";
  out += url.substr(at);
  return out;
}

}  // namespace streamlock::detail
