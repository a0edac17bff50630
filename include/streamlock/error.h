#pragma once

/// @file
/// The library's one exception type, Error, and its ErrorCode.

#include <stdexcept>
#include <string>

namespace streamlock {

/// What went wrong, in the terms a caller can act on.
enum class ErrorCode {
  InvalidArgument,  ///< bad URL, option, identifier or argument: fix the caller
  Unsupported,      ///< something this library refuses to serve (rediss://, Redis Cluster)
  ConnectFailed,    ///< could not open or authenticate a connection
  Timeout,          ///< a deadline passed (connect, command or statement)
  PoolExhausted,    ///< no pooled connection freed up before the deadline
  ConnectionLost,   ///< an I/O error on an established connection
  ServerError,      ///< the server answered with an error (Redis error reply, SQL error)
  ShutDown,         ///< the Client was shut down
};

/// The name of a code, e.g. "timeout".
const char* toString(ErrorCode code) noexcept;

/// The one exception type of the library. Messages never contain passwords.
class Error : public std::runtime_error {
 public:
  /// An error with its code, a message for people (what() returns it) and, for PostgreSQL
  /// errors, the server's SQLSTATE.
  Error(ErrorCode code, const std::string& message, std::string sqlstate = {});

  /// What went wrong, to act on.
  ErrorCode code() const noexcept { return code_; }
  /// The five-character SQLSTATE for PostgreSQL errors, empty otherwise.
  const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  ErrorCode code_;
  std::string sqlstate_;
};

}  // namespace streamlock
