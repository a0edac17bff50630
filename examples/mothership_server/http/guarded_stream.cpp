#include "http/guarded_stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace mothership {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The longest a wait for the next request blocks in one recv() before the idle patience and the
// server's stop are looked at again (the socket's receive timeout).
constexpr milliseconds kIdleSlice{50};

// Responses smaller than this are buffered whole and sent by flush().
constexpr std::size_t kSendDirectly = 2048;

int pollOne(int fd, short events, milliseconds timeout) {
  pollfd entry{fd, events, 0};
  for (;;) {
    const int ready = ::poll(&entry, 1, static_cast<int>(std::max<milliseconds::rep>(timeout.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    return ready;
  }
}

milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

// A "Range:" header line (any case), which httplib would parse with std::regex and then honour.
bool isRangeHeader(std::string_view line) {
  constexpr std::string_view kName = "range:";
  if (line.size() < kName.size()) return false;
  for (std::size_t i = 0; i < kName.size(); ++i) {
    const char c = line[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kName[i]) return false;
  }
  return true;
}

// The address that getpeername or getsockname gives for sock, as text and port.
std::pair<std::string, int> addressOf(int sock, int (*get)(int, sockaddr*, socklen_t*)) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  char text[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (get(sock, reinterpret_cast<sockaddr*>(&address), &length) != 0) return {std::string(), 0};
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    port = ntohs(v4.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    port = ntohs(v6.sin6_port);
  }
  return {text, port};
}

}  // namespace

GuardedStream::GuardedStream(int sock, const HttpLimits& limits, const std::atomic<std::size_t>& waiting)
    : sock_(sock), limits_(limits), waiting_(waiting) {
  // A blocking recv() waiting for the next request returns after kIdleSlice without bytes.
  timeval slice{};
  slice.tv_usec = static_cast<suseconds_t>(std::chrono::microseconds(kIdleSlice).count());
  ::setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &slice, sizeof slice);
}

bool GuardedStream::awaitRequest(const std::atomic<int>& listening) {
  delivered_ = 0;  // the next request's budget starts with its first byte
  if (pos_ < buffer_.size()) return true;  // pipelined
  const auto start = Clock::now();
  for (;;) {
    if (listening.load() == INVALID_SOCKET) return false;
    const auto patience = underPressure() ? limits_.idlePressureGrace : limits_.keepAlive;
    // Out of patience: a request that came in meanwhile is still served (closing a socket with
    // unread bytes resets it, and the client would see an error instead of an answer).
    if (since(start) >= patience) return receive(/*wait=*/false) == Received::Bytes;
    switch (receive(/*wait=*/true)) {
      case Received::Bytes: return true;
      case Received::End: return false;  // closed by the peer, or failed
      case Received::Nothing: break;     // a slice of the wait went by
    }
  }
}

void GuardedStream::startRequest() {
  started_ = Clock::now();
  deadline_ = started_ + limits_.requestTimeout;
  lastProgress_ = started_;
  delivered_ = 0;
  inHead_ = true;
  atLineStart_ = true;
  headLines_ = 0;
}

bool GuardedStream::is_readable() const {
  return pos_ < buffer_.size() || pollOne(sock_, POLLIN, milliseconds{0}) > 0;
}

ssize_t GuardedStream::read(char* ptr, size_t size) {
  if (size == 0) return 0;
  if (inHead_) return readHead(ptr, size);
  if (pos_ == buffer_.size() && !fill()) return eof_ && !broken_ ? 0 : -1;
  return deliver(ptr, std::min(size, buffer_.size() - pos_));
}

ssize_t GuardedStream::write(const char* ptr, size_t size) {
  if (writeFailed_) return -1;
  if (out_.size() + size < kSendDirectly) {
    out_.append(ptr, size);
    return static_cast<ssize_t>(size);
  }
  const bool sent = sendAll(out_, std::string_view(ptr, size));
  out_.clear();
  return sent ? static_cast<ssize_t>(size) : -1;
}

bool GuardedStream::flush() {
  if (out_.empty()) return !writeFailed_;
  const bool sent = sendAll(out_, std::string_view());
  out_.clear();
  return sent;
}

void GuardedStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  if (!remote_) remote_ = addressOf(sock_, getpeername);
  ip = remote_->first;
  port = remote_->second;
}

void GuardedStream::get_local_ip_and_port(std::string& ip, int& port) const {
  if (!local_) local_ = addressOf(sock_, getsockname);
  ip = local_->first;
  port = local_->second;
}

// Sends first, then second, with as few sendmsg calls as the socket allows. A send that makes no
// progress for writeTimeout fails the connection.
bool GuardedStream::sendAll(std::string_view first, std::string_view second) {
  iovec parts[2] = {{const_cast<char*>(first.data()), first.size()},
                    {const_cast<char*>(second.data()), second.size()}};
  std::size_t part = first.empty() ? 1 : 0;
  while (!writeFailed_ && part < 2 && parts[part].iov_len > 0) {
    msghdr message{};
    message.msg_iov = parts + part;
    message.msg_iovlen = 2 - part;
    const auto n = ::sendmsg(sock_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) && pollOne(sock_, POLLOUT, limits_.writeTimeout) > 0) continue;
      writeFailed_ = true;
      break;
    }
    auto left = static_cast<std::size_t>(n);
    while (part < 2 && left >= parts[part].iov_len) {
      left -= parts[part].iov_len;
      parts[part].iov_len = 0;
      ++part;
    }
    if (part < 2) {
      parts[part].iov_base = static_cast<char*>(parts[part].iov_base) + left;
      parts[part].iov_len -= left;
    }
  }
  return !writeFailed_;
}

// The request line and headers, one whole line at a time (so that a Range line can be left out).
ssize_t GuardedStream::readHead(char* ptr, size_t size) {
  if (atLineStart_) {
    for (;;) {
      auto newline = buffer_.find('\n', std::max(pos_, scanned_));
      while (newline == std::string::npos) {
        scanned_ = buffer_.size();
        if (!fill()) {
          // At the end of input, a partial line goes to httplib as it is (it answers 400).
          if (!eof_ || broken_ || pos_ == buffer_.size()) return eof_ && !broken_ ? 0 : -1;
          newline = buffer_.size() - 1;
          break;
        }
        newline = buffer_.find('\n', scanned_);
      }
      const std::string_view line(buffer_.data() + pos_, newline + 1 - pos_);
      const bool header = headLines_++ > 0;
      if (header && isRangeHeader(line)) {
        pos_ += line.size();
        delivered_ += line.size();
        continue;
      }
      lineEnd_ = newline + 1;
      lastHeadLine_ = header && line == "\r\n";
      atLineStart_ = false;
      break;
    }
  }
  const auto n = deliver(ptr, std::min(size, lineEnd_ - pos_));
  if (pos_ == lineEnd_) {
    atLineStart_ = true;
    if (lastHeadLine_) inHead_ = false;
  }
  return n;
}

ssize_t GuardedStream::deliver(char* ptr, size_t n) {
  std::memcpy(ptr, buffer_.data() + pos_, n);
  pos_ += n;
  delivered_ += n;
  if (pos_ == buffer_.size() && atLineStart_) {
    buffer_.clear();
    pos_ = scanned_ = lineEnd_ = 0;
  }
  return static_cast<ssize_t>(n);
}

// Receives more bytes of the current request. False at the end of input (eof_), or when the
// request broke its deadline or budget, stalled, or the socket failed (broken_).
bool GuardedStream::fill() {
  if (eof_ || broken_) return false;
  const auto seen = delivered_ + (buffer_.size() - pos_);
  if (seen >= limits_.maxRequestBytes) return fail();
  if (pos_ > 0 && pos_ >= buffer_.size() / 2) {  // keep the buffer from creeping
    buffer_.erase(0, pos_);
    scanned_ -= std::min(scanned_, pos_);
    lineEnd_ -= std::min(lineEnd_, pos_);
    pos_ = 0;
  }
  if (!out_.empty() && !flush()) return fail();  // e.g. a 100 Continue the client waits for
  // The bytes are usually there already: recv before poll.
  for (auto got = receive(/*wait=*/false);; got = receive(/*wait=*/false)) {
    if (got == Received::Bytes) return true;
    if (got == Received::End) return false;
    const bool pressure = underPressure();
    const auto deadline = pressure ? std::min(deadline_, started_ + limits_.requestTimeoutUnderPressure) : deadline_;
    const auto stall = pressure ? limits_.stallUnderPressure : limits_.requestTimeout;
    const auto left = std::min(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()),
                               stall - since(lastProgress_));
    if (left.count() <= 0) return fail();
    const int ready = pollOne(sock_, POLLIN, std::min(left, milliseconds{100}));
    if (ready < 0) return fail();
    if (ready == 0) continue;  // the pressure may have changed: look again
  }
}

// One recv into buffer_, within the request's byte budget: waiting up to kIdleSlice (the socket's
// receive timeout) or not at all. End, with eof_ or broken_ set, at the end of input or on an error.
GuardedStream::Received GuardedStream::receive(bool wait) {
  char chunk[16384];
  const auto seen = delivered_ + (buffer_.size() - pos_);
  if (seen >= limits_.maxRequestBytes) {
    fail();
    return Received::End;
  }
  const auto room = std::min(sizeof chunk, limits_.maxRequestBytes - seen);
  for (;;) {
    const auto n = ::recv(sock_, chunk, room, wait ? 0 : MSG_DONTWAIT);
    if (n > 0) {
      buffer_.append(chunk, static_cast<std::size_t>(n));
      lastProgress_ = Clock::now();
      return Received::Bytes;
    }
    if (n == 0) {
      eof_ = true;
      return Received::End;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Received::Nothing;
    fail();
    return Received::End;
  }
}

bool GuardedStream::fail() {
  broken_ = true;
  return false;
}

}  // namespace mothership
