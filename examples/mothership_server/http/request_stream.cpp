#include "http/request_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace mothership {
namespace {

// Whether line starts with name (lowercase, with its colon), in any case.
bool startsWithName(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = line[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != name[i]) return false;
  }
  return true;
}

// A "Range:" header line (any case), which httplib would parse with std::regex and then honour.
bool isRangeHeader(std::string_view line) { return startsWithName(line, "range:"); }

bool hasRangeHeader(std::string_view head) {
  for (std::size_t at = head.find('\n'); at != std::string_view::npos && at + 1 < head.size(); at = head.find('\n', at + 1)) {
    if (isRangeHeader(head.substr(at + 1))) return true;
  }
  return false;
}

// Calls each(line, first) for every line of head, its line end included.
template <typename Each>
void forEachLine(std::string_view head, Each each) {
  std::size_t start = 0;
  for (bool first = true; start < head.size(); first = false) {
    const auto end = std::min(head.find('\n', start), head.size() - 1) + 1;
    each(head.substr(start, end - start), first);
    start = end;
  }
}

// RFC 9110 section 5.6.2: tchar.
bool isTokenChar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// A header line (with its line end) that httplib would skip or file under another name: a bare
// "\n" line end, a field name that is not a token (whitespace before the colon), no colon.
bool isMalformedHeaderLine(std::string_view line) {
  if (line.size() < 2 || line[line.size() - 2] != '\r') return true;
  const auto colon = line.find(':');
  if (colon == 0 || colon == std::string_view::npos) return true;
  return !std::all_of(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(colon), isTokenChar);
}

}  // namespace

RequestStream::RequestStream(int sock, std::string_view head, std::string& out, const Address& remote,
                             const Address& local)
    : sock_(sock), head_(head), out_(out), remote_(remote), local_(local) {
  // httplib 0.11 percent-decodes every header value ("Authorization: Bearer %74ok" reaches the
  // handler as "Bearer tok"): a '%' of a header line is passed on as "%25", which it decodes back
  // into '%', so that each header value is the bytes the client sent.
  const auto headerLines = std::min(head.find('\n'), head.size());
  const bool hasPercent = head.find('%', headerLines) != std::string_view::npos;
  if (!hasPercent && !hasRangeHeader(head)) return;
  forEachLine(head, [this](std::string_view line, bool first) {
    if (first) {
      filtered_.append(line);  // the request line: its target is decoded as a URL, as it should be
    } else if (!isRangeHeader(line)) {
      for (const char c : line) {
        if (c == '%') {
          filtered_.append("%25");
        } else {
          filtered_ += c;
        }
      }
    }
  });
  head_ = filtered_;
}

std::string answerHead(std::string_view head) {
  static constexpr std::string_view kKept[] = {"connection:", "accept-encoding:", "expect:", "content-length:",
                                               "transfer-encoding:"};
  // "METHOD target VERSION\r\n" (httplib parsed it in the first run): the target is not needed.
  const auto requestLine = head.substr(0, head.find('\n'));
  const auto method = requestLine.find(' ');
  const auto version = requestLine.rfind(' ');
  if (method == std::string_view::npos || version == method) return std::string(head);
  std::string kept;
  forEachLine(head, [&](std::string_view line, bool first) {
    if (first) {
      kept.append(line.substr(0, method)).append(" /").append(line.substr(version));
    } else if (line == "\r\n" || std::any_of(std::begin(kKept), std::end(kKept), [&](std::string_view name) {
                 return startsWithName(line, name);
               })) {
      kept.append(line);
    }
  });
  return kept;
}

ssize_t RequestStream::read(char* ptr, size_t size) {
  const auto n = std::min(size, head_.size() - pos_);
  std::memcpy(ptr, head_.data() + pos_, n);
  pos_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t RequestStream::write(const char* ptr, size_t size) {
  out_.append(ptr, size);
  return static_cast<ssize_t>(size);
}

void RequestStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  ip = remote_.ip;
  port = remote_.port;
}

void RequestStream::get_local_ip_and_port(std::string& ip, int& port) const {
  ip = local_.ip;
  port = local_.port;
}

std::size_t HeadScanner::scan(std::string_view bytes) {
  for (;;) {
    const auto newline = bytes.find('\n', scanned_);
    if (newline == std::string_view::npos) return 0;
    const auto line = bytes.substr(scanned_, newline + 1 - scanned_);
    scanned_ = newline + 1;
    // httplib refuses a request line without CR at once (400), and skips such header lines.
    if (lines_++ == 0 ? line.size() < 2 || line[line.size() - 2] != '\r' : line == "\r\n") return scanned_;
    if (lines_ > 1) malformed_ = malformed_ || isMalformedHeaderLine(line);
  }
}

Address addressOf(int sock, int (*get)(int, sockaddr*, socklen_t*)) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  char text[INET6_ADDRSTRLEN] = {};
  Address result;
  if (get(sock, reinterpret_cast<sockaddr*>(&address), &length) != 0) return result;
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    result.port = ntohs(v4.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    result.port = ntohs(v6.sin6_port);
  }
  result.ip = text;
  return result;
}

}  // namespace mothership
