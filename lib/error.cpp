#include "streamlock/error.h"

#include <utility>

namespace streamlock {

const char* toString(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::InvalidArgument: return "invalid argument";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::ConnectFailed: return "connect failed";
    case ErrorCode::Timeout: return "timeout";
    case ErrorCode::PoolExhausted: return "pool exhausted";
    case ErrorCode::ConnectionLost: return "connection lost";
    case ErrorCode::ServerError: return "server error";
    case ErrorCode::ShutDown: return "shut down";
  }
  return "unknown error";
}

Error::Error(ErrorCode code, const std::string& message, std::string sqlstate)
    : std::runtime_error(message), code_(code), sqlstate_(std::move(sqlstate)) {}

}  // namespace streamlock
