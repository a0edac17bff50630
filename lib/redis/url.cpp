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

namespace {

// One host[:port] of an authority; [IPv6] bracketed.
RedisEndpoint parseEndpoint(std::string_view text, int defaultPort) {
  RedisEndpoint out;
  out.port = defaultPort;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string_view::npos) invalid("unterminated IPv6 address");
    std::string_view address = text.substr(1, close - 1);
    for (char c : address) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') invalid("bad IPv6 address");
    }
    out.host = std::string(address);
    std::string_view after = text.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') invalid("unexpected text after the IPv6 address");
      port = after.substr(1);
      if (port.empty()) invalid("empty port");
    }
  } else {
    std::size_t colon = text.find(':');
    out.host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = text.substr(colon + 1);
      if (port.empty()) invalid("empty port");
    }
    for (char c : out.host) {
      if (!isHostChar(c)) invalid("bad host name");
    }
  }
  if (out.host.empty()) invalid("missing host");
  if (!port.empty()) out.port = parseNumber(port, 1, 65535, "port");
  return out;
}

struct Scheme {
  std::string_view prefix;
  RedisTopologyKind kind;
  bool tls;
  int defaultPort;
};

constexpr Scheme kSchemes[] = {
    {"redis://", RedisTopologyKind::Standalone, false, 6379},
    {"rediss://", RedisTopologyKind::Standalone, true, 6379},
    {"redis-sentinel://", RedisTopologyKind::Sentinel, false, 26379},
    {"rediss-sentinel://", RedisTopologyKind::Sentinel, true, 26379},
    {"redis-cluster://", RedisTopologyKind::Cluster, false, 6379},
    {"rediss-cluster://", RedisTopologyKind::Cluster, true, 6379},
};

}  // namespace

RedisUrl parseRedisUrl(std::string_view url) {
  if (startsWithNoCase(url, "unix://") || startsWithNoCase(url, "redis+unix://")) {
    throw Error(ErrorCode::Unsupported, "Unix-socket Redis URLs are not supported; use redis://host:port");
  }
  RedisUrl out;
  std::string_view rest;
  int defaultPort = 0;
  for (const Scheme& scheme : kSchemes) {
    if (startsWithNoCase(url, scheme.prefix)) {
      rest = url.substr(scheme.prefix.size());
      out.kind = scheme.kind;
      out.tls = scheme.tls;
      defaultPort = scheme.defaultPort;
      break;
    }
  }
  if (defaultPort == 0) {
    invalid("expected redis://[user:password@]host[:port][/db], rediss://..., "
            "redis-sentinel://host:port[,host:port...][/db]?master=NAME or redis-cluster://host:port[,host:port...]");
  }
  if (rest.find('#') != std::string_view::npos) invalid("fragments are not supported");
  std::string_view query;
  if (const std::size_t question = rest.find('?'); question != std::string_view::npos) {
    query = rest.substr(question + 1);
    rest = rest.substr(0, question);
  }
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

  // host[:port], or a comma-separated list of them for the sentinels / the cluster's seed nodes.
  for (std::size_t begin = 0;;) {
    const std::size_t comma = authority.find(',', begin);
    out.endpoints.push_back(parseEndpoint(authority.substr(begin, comma - begin), defaultPort));
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  if (out.kind == RedisTopologyKind::Standalone && out.endpoints.size() > 1) {
    invalid("a redis:// URL names one server; use redis-sentinel:// or redis-cluster:// for several");
  }
  out.host = out.endpoints.front().host;
  out.port = out.endpoints.front().port;

  if (!path.empty()) out.db = parseNumber(path, 0, 1 << 20, "database number");
  if (out.kind == RedisTopologyKind::Cluster && out.db != 0) invalid("Redis Cluster has only database 0");

  // Query parameters: master=NAME for the sentinel forms, nothing else.
  for (std::size_t begin = 0; begin < query.size();) {
    std::size_t amp = query.find('&', begin);
    if (amp == std::string_view::npos) amp = query.size();
    const std::string_view pair = query.substr(begin, amp - begin);
    const std::size_t eq = pair.find('=');
    const std::string_view name = pair.substr(0, eq);
    if (name != "master" || eq == std::string_view::npos || out.kind != RedisTopologyKind::Sentinel) {
      invalid("unsupported query parameter (only master=NAME, for redis-sentinel:// URLs)");
    }
    if (!out.masterName.empty()) invalid("master= given twice");
    out.masterName = percentDecode(pair.substr(eq + 1), "master name");
    if (out.masterName.empty()) invalid("an empty master name");
    begin = amp + 1;
  }
  if (out.kind == RedisTopologyKind::Sentinel && out.masterName.empty()) {
    invalid("a redis-sentinel:// URL needs ?master=NAME");
  }
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
