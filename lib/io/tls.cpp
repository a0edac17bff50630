// The TLS half of Stream: OpenSSL on the stream's non-blocking socket.
//
// The socket is reached through a small BIO of our own (socketBioMethod) instead of OpenSSL's
// socket BIO, whose write() raises SIGPIPE when the peer has reset the connection: a library must
// not change the process's signal disposition, and the plaintext path already sends with
// MSG_NOSIGNAL. The BIO also remembers the socket's errno and EOF, which OpenSSL's own
// SSL_ERROR_SYSCALL leaves to a global errno that later calls may overwrite.
//
// Nothing is left buffered inside OpenSSL between calls, so that poll/epoll on the socket tells the
// whole truth: read-ahead stays off (a record is read header first, then exactly its body), and
// tlsRead calls SSL_read until OpenSSL says it would block.
//
// OpenSSL's error queue is per thread and shared by every SSL object of that thread: each call
// below starts with an empty queue (ERR_clear_error) and a failed call empties it as it turns its
// entries into the exception's message, so no error is ever blamed on another stream.
#include "io/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "streamlock/error.h"

namespace streamlock::detail {

struct TlsContext::Impl {
  SSL_CTX* ctx = nullptr;
  bool verify = true;
  ~Impl() { SSL_CTX_free(ctx); }
};

struct TlsState {
  SSL* ssl = nullptr;
  int fd = -1;
  bool verify = true;
  bool failed = false;           // a fatal error: no close_notify (OpenSSL forbids SSL_shutdown)
  bool closeNotifySent = false;
  int socketError = 0;           // the last errno of the socket, other than EAGAIN and EINTR
  bool socketEof = false;        // recv returned 0
  std::string peer;              // "127.0.0.1:6390", or "localhost (127.0.0.1:6390)"
};

namespace {

// --- The socket BIO ---------------------------------------------------------------------------

TlsState& stateOf(BIO* bio) { return *static_cast<TlsState*>(BIO_get_data(bio)); }

int bioWrite(BIO* bio, const char* data, int size) {
  BIO_clear_retry_flags(bio);
  if (size <= 0) return 0;
  TlsState& state = stateOf(bio);
  for (;;) {
    const ssize_t n = ::send(state.fd, data, static_cast<std::size_t>(size), MSG_NOSIGNAL);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_write(bio);
    } else {
      state.socketError = errno;
    }
    return -1;
  }
}

int bioRead(BIO* bio, char* data, int size) {
  BIO_clear_retry_flags(bio);
  if (size <= 0) return 0;
  TlsState& state = stateOf(bio);
  for (;;) {
    const ssize_t n = ::recv(state.fd, data, static_cast<std::size_t>(size), 0);
    if (n > 0) return static_cast<int>(n);
    if (n == 0) {
      state.socketEof = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_read(bio);
    } else {
      state.socketError = errno;
    }
    return -1;
  }
}

int bioPuts(BIO* bio, const char* text) { return bioWrite(bio, text, static_cast<int>(std::strlen(text))); }

long bioCtrl(BIO* bio, int command, long, void* pointer) {
  switch (command) {
    case BIO_CTRL_FLUSH:  // nothing is buffered here: a flush always succeeds
      return 1;
    case BIO_CTRL_EOF:
      return stateOf(bio).socketEof ? 1 : 0;
    case BIO_C_GET_FD: {
      const int fd = stateOf(bio).fd;
      if (pointer != nullptr) *static_cast<int*>(pointer) = fd;
      return fd;
    }
    default:  // everything else (kTLS, duplication, pending counts) is unsupported or zero
      return 0;
  }
}

int bioCreate(BIO* bio) {
  BIO_set_data(bio, nullptr);
  BIO_set_init(bio, 0);
  return 1;
}

// The socket belongs to the Stream: freeing the BIO (with the SSL) leaves it open.
int bioDestroy(BIO* bio) {
  if (bio == nullptr) return 0;
  BIO_set_data(bio, nullptr);
  BIO_set_init(bio, 0);
  return 1;
}

// Made once (a thread-safe static) and kept for the life of the process.
const BIO_METHOD* socketBioMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
                                 "streamlock socket");
    if (m == nullptr) return m;
    if (BIO_meth_set_write(m, bioWrite) != 1 || BIO_meth_set_read(m, bioRead) != 1 ||
        BIO_meth_set_puts(m, bioPuts) != 1 || BIO_meth_set_ctrl(m, bioCtrl) != 1 ||
        BIO_meth_set_create(m, bioCreate) != 1 || BIO_meth_set_destroy(m, bioDestroy) != 1) {
      BIO_meth_free(m);
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return m;
  }();
  return method;
}

// --- Messages ---------------------------------------------------------------------------------

// The reasons in this thread's error queue, oldest (the root cause) first, without repeats or
// OpenSSL's "<library> lib" wrappers, at most three, joined by ": "; the queue is left empty.
// Reasons are OpenSSL's fixed texts and errno's: never a key's or a file's content.
std::string takeErrors() {
  std::vector<std::string> reasons;
  while (const unsigned long code = ERR_get_error()) {
    std::string text;
    if (ERR_SYSTEM_ERROR(code)) {
      text = std::strerror(ERR_GET_REASON(code));
    } else if (const char* reason = ERR_reason_error_string(code)) {
      text = reason;
    } else {
      char buffer[256];
      ERR_error_string_n(code, buffer, sizeof buffer);
      text = buffer;
    }
    const bool wrapper = text.size() > 4 && text.compare(text.size() - 4, 4, " lib") == 0;
    if (wrapper || reasons.size() == 3 || std::find(reasons.begin(), reasons.end(), text) != reasons.end()) continue;
    reasons.push_back(std::move(text));
  }
  std::string out;
  for (const auto& reason : reasons) out += (out.empty() ? "" : ": ") + reason;
  return out;
}

// Why the last SSL_* call of tls failed, from SSL_get_error's answer: OpenSSL's reasons, the
// certificate verification error when verification failed, or what the socket said.
std::string failureReason(TlsState& tls, int error) {
  std::string reason = takeErrors();
  if (tls.verify) {
    const long verifyResult = SSL_get_verify_result(tls.ssl);
    if (verifyResult != X509_V_OK) {
      if (reason.empty()) reason = "certificate verify failed";
      reason += ": ";
      reason += X509_verify_cert_error_string(verifyResult);
    }
  }
  if (!reason.empty()) return reason;
  if (tls.socketError != 0) return std::strerror(tls.socketError);
  if (error == SSL_ERROR_ZERO_RETURN || error == SSL_ERROR_SYSCALL || tls.socketEof) {
    return "the server closed the connection";
  }
  return "OpenSSL error " + std::to_string(error);
}

// After a write failed on a reset connection: the alert the server sent before it closed, if
// it is still in the socket, as "; the server had sent: <reason>". A TLS 1.3 server checks the
// client's certificate after the client's side of the handshake is done, so a missing or refused
// client certificate surfaces here, on the first command, as a reset with an alert before it.
// (A failed write leaves OpenSSL's read side usable; the stream is failed either way.)
std::string alertBefore(TlsState& tls) {
  ERR_clear_error();
  char buffer[512];
  std::size_t got = 0;
  const int rc = SSL_read_ex(tls.ssl, buffer, sizeof buffer, &got);
  const int error = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(tls.ssl, rc);
  // Only an alert received (its reason is SSL_AD_REASON_OFFSET + the alert), not e.g. the EOF.
  const unsigned long first = ERR_peek_error();
  const bool alertReceived = error == SSL_ERROR_SSL && ERR_GET_LIB(first) == ERR_LIB_SSL &&
                             ERR_GET_REASON(first) >= SSL_AD_REASON_OFFSET;
  const std::string alert = alertReceived ? takeErrors() : std::string();
  ERR_clear_error();
  return alert.empty() ? std::string() : "; the server had sent: " + alert;
}

std::string peerText(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    ::inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  ::inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
  return "[" + std::string(host) + "]:" + std::to_string(ntohs(v6->sin6_port));
}

bool ipLiteral(const std::string& name) {
  unsigned char buffer[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, name.c_str(), buffer) == 1 || ::inet_pton(AF_INET6, name.c_str(), buffer) == 1;
}

[[noreturn]] void invalidFile(const char* what, const std::string& file) {
  const std::string reason = takeErrors();
  throw Error(ErrorCode::InvalidArgument,
              std::string("cannot load the TLS ") + what + " " + file + (reason.empty() ? "" : ": " + reason));
}

// An encrypted key would make OpenSSL ask for its passphrase on the terminal: refuse instead.
int noPassphrase(char*, int, int, void*) { return -1; }

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
};

}  // namespace

// --- TlsContext -------------------------------------------------------------------------------

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;

// OpenSSL 3 initialises itself (thread-safely) on first use; the context is private to this call
// until it is returned, and its error queue entries are this thread's.
std::shared_ptr<TlsContext> TlsContext::create(const TlsSettings& settings) {
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, SslCtxDeleter> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1) {
    const std::string reason = takeErrors();
    throw Error(ErrorCode::ConnectFailed, "cannot create a TLS context: " + reason);
  }
  // A write that blocks returns what it took (partial writes), and its retry may come from a
  // buffer that has moved (the caller's output buffer grows and compacts between retries).
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // No TLS 1.2 renegotiation (Redis never asks for one): the one case where a write must first
  // read, which would leave a stream with unsent bytes waiting for readability, not writability.
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_default_passwd_cb(ctx.get(), noPassphrase);

  // A CA file given is loaded even with insecureSkipVerify, so that a wrong path is reported at
  // once rather than on the day verification is switched back on.
  if (!settings.caFile.empty() && SSL_CTX_load_verify_locations(ctx.get(), settings.caFile.c_str(), nullptr) != 1) {
    invalidFile("CA file", settings.caFile);
  }
  if (settings.insecureSkipVerify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  } else {
    if (settings.caFile.empty() && SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      const std::string reason = takeErrors();
      throw Error(ErrorCode::InvalidArgument, "cannot load the system's trusted CAs: " + reason);
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }

  if (settings.certFile.empty() != settings.keyFile.empty()) {
    throw Error(ErrorCode::InvalidArgument,
                settings.certFile.empty() ? "a TLS key file (" + settings.keyFile + ") needs a certificate file"
                                          : "a TLS certificate file (" + settings.certFile + ") needs a key file");
  }
  if (!settings.certFile.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), settings.certFile.c_str()) != 1) {
      invalidFile("certificate file", settings.certFile);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), settings.keyFile.c_str(), SSL_FILETYPE_PEM) != 1) {
      invalidFile("key file", settings.keyFile);
    }
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
      ERR_clear_error();
      throw Error(ErrorCode::InvalidArgument, "the TLS key file " + settings.keyFile +
                                                  " does not match the certificate file " + settings.certFile);
    }
  }
  ERR_clear_error();

  auto impl = std::make_unique<Impl>();
  impl->ctx = ctx.release();
  impl->verify = !settings.insecureSkipVerify;
  return std::shared_ptr<TlsContext>(new TlsContext(std::move(impl)));
}

// --- One stream -------------------------------------------------------------------------------

void TlsStateDeleter::operator()(TlsState* tls) const noexcept {
  if (tls == nullptr) return;
  SSL_free(tls->ssl);  // frees the BIO too; sends nothing and leaves the socket open
  delete tls;
}

std::unique_ptr<TlsState, TlsStateDeleter> tlsBegin(const TlsContext& context, int fd, const std::string& serverName) {
  ERR_clear_error();
  std::unique_ptr<TlsState, TlsStateDeleter> tls(new TlsState);
  tls->fd = fd;
  tls->verify = context.impl().verify;
  const std::string address = peerText(fd);
  const bool ip = ipLiteral(serverName);
  tls->peer = serverName.empty() || ip ? address : serverName + " (" + address + ")";
  const auto fail = [&](const std::string& what) {
    const std::string reason = takeErrors();
    throw Error(ErrorCode::ConnectFailed,
                "TLS handshake with " + tls->peer + " failed: " + what + (reason.empty() ? "" : ": " + reason));
  };

  if (tls->verify && serverName.empty()) fail("no server name to check the certificate against");
  tls->ssl = SSL_new(context.impl().ctx);
  if (tls->ssl == nullptr) fail("cannot create the TLS state");
  const BIO_METHOD* method = socketBioMethod();
  BIO* bio = method != nullptr ? BIO_new(method) : nullptr;
  if (bio == nullptr) fail("cannot create the socket BIO");
  BIO_set_data(bio, tls.get());
  BIO_set_init(bio, 1);
  SSL_set_bio(tls->ssl, bio, bio);  // the SSL owns the BIO from here

  // SNI for DNS names only (RFC 6066 forbids IP literals there). SSL_set_tlsext_host_name is this
  // SSL_ctrl call behind a macro with a C cast.
  if (!ip && !serverName.empty() &&
      SSL_ctrl(tls->ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
               const_cast<char*>(serverName.c_str())) != 1) {
    fail("cannot set the server name (SNI) " + serverName);
  }
  if (tls->verify) {
    if (ip) {
      if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls->ssl), serverName.c_str()) != 1) {
        fail("cannot check the certificate against " + serverName);
      }
    } else {
      // DNS SANs only: never the subject's CN, which OpenSSL would otherwise check when the
      // certificate has no DNS SAN (a CN-only certificate, or one with IP SANs alone).
      SSL_set_hostflags(tls->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
      if (SSL_set1_host(tls->ssl, serverName.c_str()) != 1) fail("cannot check the certificate against " + serverName);
    }
  }
  SSL_set_connect_state(tls->ssl);
  return tls;
}

bool tlsHandshake(TlsState& tls, std::uint32_t& wants) {
  ERR_clear_error();
  const int rc = SSL_connect(tls.ssl);
  if (rc == 1) return true;
  const int error = SSL_get_error(tls.ssl, rc);
  if (error == SSL_ERROR_WANT_READ) {
    wants = Stream::kRead;
    return false;
  }
  if (error == SSL_ERROR_WANT_WRITE) {
    wants = Stream::kWrite;
    return false;
  }
  tls.failed = true;
  const std::string reason = failureReason(tls, error);
  throw Error(ErrorCode::ConnectFailed, "TLS handshake with " + tls.peer + " failed: " + reason);
}

bool tlsRead(TlsState& tls, std::string& out, std::uint32_t& wants) {
  constexpr std::size_t kChunk = 16384;  // the largest TLS record: one SSL_read takes a whole one
  char chunk[kChunk];  // appended from the stack: growing `out` first would zero 16 KiB per read
  for (;;) {
    std::size_t got = 0;
    ERR_clear_error();
    const int rc = SSL_read_ex(tls.ssl, chunk, kChunk, &got);
    if (rc == 1) {
      out.append(chunk, got);
      continue;  // until OpenSSL would block: bytes it holds are invisible to poll
    }
    const int error = SSL_get_error(tls.ssl, rc);
    switch (error) {
      case SSL_ERROR_WANT_READ:
        wants = Stream::kRead;
        return true;
      case SSL_ERROR_WANT_WRITE:
        wants = Stream::kWrite;
        return true;
      case SSL_ERROR_ZERO_RETURN:  // close_notify
        ERR_clear_error();
        return false;
      default:
        break;
    }
    tls.failed = true;
    // A peer that closes without close_notify (Redis does on QUIT or a timeout) ends the stream as
    // a plaintext EOF would; a truncated reply is the RESP parser's to notice.
    const unsigned long first = ERR_peek_error();
    if ((error == SSL_ERROR_SSL && ERR_GET_LIB(first) == ERR_LIB_SSL &&
         ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
        (error == SSL_ERROR_SYSCALL && first == 0 && tls.socketError == 0)) {
      ERR_clear_error();
      return false;
    }
    const std::string reason = failureReason(tls, error);
    throw Error(ErrorCode::ConnectionLost, "reading from " + tls.peer + " (TLS): " + reason);
  }
}

std::size_t tlsWrite(TlsState& tls, const char* data, std::size_t size, std::uint32_t& wants) {
  std::size_t total = 0;
  while (total < size) {
    std::size_t written = 0;
    ERR_clear_error();
    const int rc = SSL_write_ex(tls.ssl, data + total, size - total, &written);
    if (rc == 1) {
      total += written;
      continue;
    }
    const int error = SSL_get_error(tls.ssl, rc);
    if (error == SSL_ERROR_WANT_WRITE) {
      wants = Stream::kWrite;
      break;
    }
    if (error == SSL_ERROR_WANT_READ) {
      wants = Stream::kRead;
      break;
    }
    tls.failed = true;
    std::string reason = failureReason(tls, error);
    if (error == SSL_ERROR_SYSCALL && tls.socketError != 0) reason += alertBefore(tls);
    throw Error(ErrorCode::ConnectionLost, "writing to " + tls.peer + " (TLS): " + reason);
  }
  return total;
}

void tlsCloseNotify(TlsState& tls) noexcept {
  if (tls.failed || tls.closeNotifySent) return;
  tls.closeNotifySent = true;
  ERR_clear_error();
  SSL_shutdown(tls.ssl);  // sends close_notify (or fails to, on a full socket); never waits for the reply
  ERR_clear_error();
}

}  // namespace streamlock::detail
