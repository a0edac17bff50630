#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace streamlock::detail {

// One resolved address of a host, ready for connect().
struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
  std::string text;  // "127.0.0.1:6379" or "[::1]:6379", for messages
};

// The addresses of host:port: numeric hosts without a lookup, names with getaddrinfo (which may
// block on a slow resolver). Throws Error(ConnectFailed) when the name does not resolve.
std::vector<Address> resolve(const std::string& host, int port);

// TLS settings of a client (see RedisTlsOptions in options.h).
struct TlsSettings {
  std::string caFile;    // PEM bundle of trusted CAs; empty: the system store
  std::string certFile;  // client certificate chain (PEM); empty: none
  std::string keyFile;   // its private key (PEM)
  bool insecureSkipVerify = false;
};

// An OpenSSL client context (SSL_CTX): TLS 1.2 or later, peer verification against the CA file or
// the system store unless insecureSkipVerify, the client certificate when given. Immutable once
// made, so streams of any thread may share it.
class TlsContext {
 public:
  // Throws Error(InvalidArgument) naming the file when a CA, certificate or key cannot be loaded
  // (or the key does not match the certificate).
  static std::shared_ptr<TlsContext> create(const TlsSettings& settings);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  struct Impl;
  Impl& impl() const noexcept { return *impl_; }

 private:
  explicit TlsContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The OpenSSL state of one TLS stream (tls.cpp).
struct TlsState;
struct TlsStateDeleter {
  void operator()(TlsState* tls) const noexcept;
};

// A non-blocking TCP connection, optionally TLS, driven by its owner from readiness events
// (poll or epoll, level-triggered). Never blocks. Not thread-safe: one owner thread.
//
// Lifecycle: connect() starts a non-blocking connect; the owner waits for wants() and calls
// advance() until it returns true (open: TCP connected and, with TLS, handshake done and the peer
// verified) or throws. Then read()/write(), waiting for wants() whenever they would block.
class Stream {
 public:
  // What the stream waits for before its next step.
  enum Want : std::uint32_t { kNone = 0, kRead = 1, kWrite = 2 };

  // Starts connecting to address. With tls, the handshake follows the TCP connect; serverName is
  // sent as SNI when it is a DNS name (not an IP literal) and the peer certificate is checked
  // against it (DNS names against DNS SANs, IP literals against IP SANs). Throws
  // Error(ConnectFailed) when the socket cannot be created or the connect fails at once.
  static std::unique_ptr<Stream> connect(const Address& address, std::shared_ptr<TlsContext> tls,
                                         const std::string& serverName);
  ~Stream();  // closes the socket (a TLS close_notify is attempted once, without waiting)
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  int fd() const noexcept { return fd_; }
  const std::string& peer() const noexcept { return peer_; }
  bool open() const noexcept { return state_ == State::Open; }
  // While connecting: whether the TCP connect is done and the TLS handshake under way.
  bool handshaking() const noexcept { return state_ == State::Handshaking; }

  // The events to wait for now: while connecting, what the connect or handshake needs; once open,
  // kRead always, plus kWrite while write() was left with unsent bytes (or TLS needs it).
  std::uint32_t wants() const noexcept;

  // Advances the TCP connect and the TLS handshake. True once open. Throws Error(ConnectFailed)
  // with the reason: the socket error ("connection refused"), or for TLS the OpenSSL reason, with
  // the verification error text when verification failed (e.g. "certificate verify failed:
  // unable to get local issuer certificate").
  bool advance();

  // Open streams only. Appends what can be read now to out, reading until the socket (and, for
  // TLS, OpenSSL's own buffer) is empty. Returns false at end of stream. Throws
  // Error(ConnectionLost) on an error.
  bool read(std::string& out);
  // Writes as much of data as the socket takes now; returns how many bytes were taken (0 when it
  // would block). Throws Error(ConnectionLost) on an error. With TLS, a write that returned fewer
  // bytes must be retried with the same remaining data (OpenSSL's rule), which a caller that
  // keeps its unsent bytes in a buffer does.
  std::size_t write(const char* data, std::size_t size);

  // Whether the peer has closed (or reset) an open stream that this side has not read yet: a
  // non-blocking MSG_PEEK. Pending data is not a closure (with TLS the server may send records at
  // any time). For a connection about to be reused after being idle.
  bool peerClosed() const noexcept;

  // fork() child: closes the descriptor without sending anything (no TLS close_notify) and frees
  // the TLS state; the parent's connection is unaffected.
  void closeSilently() noexcept;

 private:
  enum class State { Connecting, Handshaking, Open, Closed };
  Stream(int fd, std::string peer);

  int fd_ = -1;
  std::string peer_;
  State state_ = State::Connecting;
  std::uint32_t tlsWants_ = kNone;      // what the last TLS call asked for
  bool writeBlocked_ = false;           // the last write() was left with unsent bytes
  std::shared_ptr<TlsContext> tlsContext_;  // until the handshake starts; null for plaintext
  std::string serverName_;                  // SNI and the name the certificate must match
  std::unique_ptr<TlsState, TlsStateDeleter> tls_;  // during and after the handshake
};

}  // namespace streamlock::detail
