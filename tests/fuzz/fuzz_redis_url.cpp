// libFuzzer target: parseRedisUrl and redactUrl on arbitrary bytes.
//
// Properties checked (a violation aborts, which libFuzzer reports as a crash):
// - the only exception either function throws is streamlock::Error (anything else escapes the
//   harness and ends in std::terminate);
// - a parsed URL has a host, a port in 1..65535, a database >= 0, and a password whenever it has
//   a user name;
// - redactUrl of a parsed URL with a password parses to the same URL with the password "***"
//   (the password is gone, everything else is intact);
// - an error message never contains the password: the input is parsed a second time with its
//   password replaced by a canary that no message contains by chance, and a failure message of
//   that second parse must not contain the canary.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "redis/url.h"
#include "streamlock/error.h"

using streamlock::detail::parseRedisUrl;
using streamlock::detail::RedisUrl;
using streamlock::detail::redactUrl;

namespace {

[[noreturn]] void violated(const char* what, std::string_view input) {
  std::fprintf(stderr, "fuzz_redis_url: %s\n  input (%zu bytes): %.*s\n", what, input.size(),
               static_cast<int>(input.size()), input.data());
  std::abort();
}

void check(bool ok, const char* what, std::string_view input) {
  if (!ok) violated(what, input);
}

// Where redactUrl's contract puts the password: [user[:password]@] right after "scheme://",
// before the first of "/?#". {npos, 0} when the input has no ":...@" there.
struct Span {
  std::size_t begin = std::string_view::npos;
  std::size_t size = 0;
};

Span passwordSpan(std::string_view url) {
  const std::size_t scheme = url.find("://");
  const std::size_t start = scheme == std::string_view::npos ? 0 : scheme + 3;
  std::size_t end = url.find_first_of("/?#", start);
  if (end == std::string_view::npos) end = url.size();
  const std::size_t at = url.substr(0, end).rfind('@');
  if (at == std::string_view::npos || at < start) return {};
  const std::size_t colon = url.substr(0, at).find(':', start);
  if (colon == std::string_view::npos) return {};
  return {colon + 1, at - colon - 1};
}

void checkParsed(const RedisUrl& url, std::string_view input) {
  check(!url.host.empty(), "parsed URL without a host", input);
  check(url.port >= 1 && url.port <= 65535, "parsed port outside 1..65535", input);
  check(url.db >= 0, "parsed negative database number", input);
  check(url.user.empty() || !url.password.empty(), "parsed a user name without a password", input);

  const std::string redacted = redactUrl(input);
  if (url.password.empty()) return;
  RedisUrl again;
  try {
    again = parseRedisUrl(redacted);
  } catch (const streamlock::Error&) {
    violated("redactUrl of a valid URL does not parse", input);
  }
  check(again.password == "***", "redactUrl kept (part of) the password", input);
  check(again.host == url.host && again.port == url.port && again.db == url.db && again.user == url.user,
        "redactUrl changed more than the password", input);
}

// The input with its password replaced by a canary: no error message may contain the canary.
void checkMessagesHidePassword(std::string_view input) {
  const Span span = passwordSpan(input);
  if (span.begin == std::string_view::npos || span.size == 0) return;
  static constexpr std::string_view canary = "Zq9xCanaryPw7Kv";  // no %, :, @, /, ?, #
  std::string probe(input.substr(0, span.begin));
  probe += canary;
  probe += input.substr(span.begin + span.size);
  try {
    (void)parseRedisUrl(probe);
  } catch (const streamlock::Error& error) {
    check(std::string_view(error.what()).find(canary) == std::string_view::npos,
          "an error message contains the password", probe);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // redactUrl takes any text, parsed or not.
  (void)redactUrl(input);

  RedisUrl url;
  try {
    url = parseRedisUrl(input);
  } catch (const streamlock::Error&) {
    checkMessagesHidePassword(input);
    return 0;
  }
  checkParsed(url, input);
  checkMessagesHidePassword(input);
  return 0;
}
