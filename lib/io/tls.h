#pragma once

// The TLS half of Stream (tls.cpp, OpenSSL). Stream calls these only when it has TLS state.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "io/stream.h"

namespace streamlock::detail {

// Creates the TLS state of a stream whose TCP connect has completed on fd: SSL_new, the fd (through
// a BIO that sends with MSG_NOSIGNAL), SNI for DNS names, host name or IP verification. Throws
// Error(ConnectFailed), also when the context verifies and serverName is empty (nothing to check
// the certificate against).
std::unique_ptr<TlsState, TlsStateDeleter> tlsBegin(const TlsContext& context, int fd, const std::string& serverName);
// One handshake step. True when done; else wants is set to Stream::kRead or kWrite.
// Throws Error(ConnectFailed) with OpenSSL's reason (and the verification error text).
bool tlsHandshake(TlsState& tls, std::uint32_t& wants);
// Reads until OpenSSL would block; false on end of stream (close_notify or EOF).
// Throws Error(ConnectionLost). wants is set to what a blocked read waits for.
bool tlsRead(TlsState& tls, std::string& out, std::uint32_t& wants);
// Writes up to size bytes; returns bytes written (fewer when blocked, wants set). After a short
// write the caller retries with the rest of the same bytes (from any address, possibly with more
// appended), never with fewer. Throws Error(ConnectionLost).
std::size_t tlsWrite(TlsState& tls, const char* data, std::size_t size, std::uint32_t& wants);
// Sends close_notify once, without waiting (the socket is non-blocking).
void tlsCloseNotify(TlsState& tls) noexcept;
// Frees the SSL object without sending anything (a fork() child, or after tlsCloseNotify).
// TlsStateDeleter (stream.h) does this.

}  // namespace streamlock::detail
