#include "io/stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "io/tls.h"
#include "streamlock/error.h"

namespace streamlock::detail {
namespace {

std::string addressText(const sockaddr* address, int port) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (address->sa_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(port);
  }
  ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, host, sizeof host);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

// Numeric IPv4 or IPv6 literal: no lookup needed (and none that could block).
bool numericAddress(const std::string& host, int port, Address& out) {
  sockaddr_in v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<std::uint16_t>(port));
    std::memcpy(&out.storage, &v4, sizeof v4);
    out.length = sizeof v4;
    out.text = addressText(reinterpret_cast<const sockaddr*>(&v4), port);
    return true;
  }
  sockaddr_in6 v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6.sin6_addr) == 1) {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<std::uint16_t>(port));
    std::memcpy(&out.storage, &v6, sizeof v6);
    out.length = sizeof v6;
    out.text = addressText(reinterpret_cast<const sockaddr*>(&v6), port);
    return true;
  }
  return false;
}

}  // namespace

std::vector<Address> resolve(const std::string& host, int port) {
  Address numeric;
  if (numericAddress(host, port, numeric)) return {numeric};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) throw Error(ErrorCode::ConnectFailed, "cannot resolve " + host + ": " + ::gai_strerror(rc));
  std::vector<Address> out;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
    Address address;
    std::memcpy(&address.storage, a->ai_addr, a->ai_addrlen);
    address.length = a->ai_addrlen;
    address.text = addressText(a->ai_addr, port);
    out.push_back(std::move(address));
  }
  ::freeaddrinfo(found);
  if (out.empty()) throw Error(ErrorCode::ConnectFailed, "cannot resolve " + host + ": no address");
  return out;
}

Stream::Stream(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}

std::unique_ptr<Stream> Stream::connect(const Address& address, std::shared_ptr<TlsContext> tls,
                                        const std::string& serverName) {
  const int fd = ::socket(address.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(ErrorCode::ConnectFailed, "cannot create a socket: " + std::string(std::strerror(errno)));
  std::unique_ptr<Stream> stream(new Stream(fd, address.text));
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A peer that vanished without a word (host down, partition) is found by keepalive; a peer that
  // is merely slow or paused still answers keepalive probes and keeps its connection.
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  const int idle = 15, interval = 5, count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address.storage), address.length) != 0 &&
      errno != EINPROGRESS) {
    throw Error(ErrorCode::ConnectFailed, "cannot connect to " + address.text + ": " + std::strerror(errno));
  }
  if (tls) {
    stream->tlsContext_ = std::move(tls);
    stream->serverName_ = serverName;
  }
  return stream;
}

Stream::~Stream() {
  if (fd_ < 0) return;
  if (tls_ && state_ == State::Open) tlsCloseNotify(*tls_);
  tls_.reset();
  ::close(fd_);
}

void Stream::closeSilently() noexcept {
  if (fd_ < 0) return;
  tls_.reset();  // SSL_free sends nothing
  ::close(fd_);
  fd_ = -1;
  state_ = State::Closed;
}

bool Stream::peerClosed() const noexcept {
  if (state_ != State::Open) return false;
  char byte;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;
  if (n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

std::uint32_t Stream::wants() const noexcept {
  switch (state_) {
    case State::Connecting: return kWrite;
    case State::Handshaking: return tlsWants_;
    case State::Open: return kRead | (writeBlocked_ ? kWrite : kNone) | tlsWants_;
    case State::Closed: return kNone;
  }
  return kNone;
}

bool Stream::advance() {
  if (state_ == State::Connecting) {
    int error = 0;
    socklen_t length = sizeof error;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error == EINPROGRESS || error == EALREADY) return false;
    if (error != 0) throw Error(ErrorCode::ConnectFailed, "cannot connect to " + peer_ + ": " + std::strerror(error));
    // getsockopt reports no error while the connect is still in flight: check it is done.
    sockaddr_storage ignored{};
    socklen_t ignoredLength = sizeof ignored;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ignored), &ignoredLength) != 0) {
      if (errno == ENOTCONN) return false;
      throw Error(ErrorCode::ConnectFailed, "cannot connect to " + peer_ + ": " + std::strerror(errno));
    }
    if (!tlsContext_) {
      state_ = State::Open;
      return true;
    }
    tls_ = tlsBegin(*tlsContext_, fd_, serverName_);
    state_ = State::Handshaking;
  }
  if (state_ == State::Handshaking) {
    if (!tlsHandshake(*tls_, tlsWants_)) return false;
    tlsWants_ = kNone;
    tlsContext_.reset();
    state_ = State::Open;
  }
  return state_ == State::Open;
}

bool Stream::read(std::string& out) {
  if (tls_) {
    tlsWants_ = kNone;
    return tlsRead(*tls_, out, tlsWants_);
  }
  // Received into a buffer on the stack, then appended: growing `out` by the whole chunk first
  // would zero 16 KiB per read for replies that are mostly a few hundred bytes.
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      out.append(chunk, static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < sizeof chunk) return true;  // drained: the next recv would only say EAGAIN
      continue;
    }
    if (n == 0) return false;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    if (errno == EINTR) continue;
    throw Error(ErrorCode::ConnectionLost, "reading from " + peer_ + ": " + std::strerror(errno));
  }
}

std::size_t Stream::write(const char* data, std::size_t size) {
  if (tls_) {
    tlsWants_ = kNone;
    const std::size_t written = tlsWrite(*tls_, data, size, tlsWants_);
    writeBlocked_ = written < size;
    return written;
  }
  std::size_t total = 0;
  while (total < size) {
    const ssize_t n = ::send(fd_, data + total, size - total, MSG_NOSIGNAL);
    if (n > 0) {
      total += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    const int error = n < 0 ? errno : EPIPE;
    throw Error(ErrorCode::ConnectionLost, "writing to " + peer_ + ": " + std::strerror(error));
  }
  writeBlocked_ = total < size;
  return total;
}

}  // namespace streamlock::detail
