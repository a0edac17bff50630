// Placeholder until the OpenSSL implementation lands: TLS streams are refused.
#include "io/tls.h"

#include "streamlock/error.h"

namespace streamlock::detail {

struct TlsContext::Impl {};
struct TlsState {};

TlsContext::TlsContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsContext::~TlsContext() = default;

std::shared_ptr<TlsContext> TlsContext::create(const TlsSettings&) {
  throw Error(ErrorCode::Unsupported, "TLS is not implemented yet");
}

void TlsStateDeleter::operator()(TlsState* tls) const noexcept { delete tls; }

std::unique_ptr<TlsState, TlsStateDeleter> tlsBegin(const TlsContext&, int, const std::string&) {
  throw Error(ErrorCode::Unsupported, "TLS is not implemented yet");
}
bool tlsHandshake(TlsState&, std::uint32_t&) { return false; }
bool tlsRead(TlsState&, std::string&, std::uint32_t&) { return false; }
std::size_t tlsWrite(TlsState&, const char*, std::size_t, std::uint32_t&) { return 0; }
void tlsCloseNotify(TlsState&) noexcept {}

}  // namespace streamlock::detail
