#pragma once

#include <optional>
#include <string>

#include "streamlock/client.h"
#include "streamlock/error.h"

namespace streamlock::test {

// What one blocking acquireStreamLock call gave: a lock, nullopt ("busy"), or an Error.
struct Acquired {
  std::optional<StreamLock> lock;
  std::optional<ErrorCode> error;
  std::string what;  // the Error's message
  std::string describe() const {
    if (lock) return "a lock";
    if (error) return std::string("Error(") + toString(*error) + ")";
    return "nullopt (busy)";
  }
};

inline Acquired acquire(Client& client, const std::string& chat, const std::string& stream,
                        Milliseconds waitFor = Milliseconds{0}) {
  Acquired out;
  try {
    out.lock = client.acquireStreamLock(chat, stream, waitFor);
  } catch (const Error& error) {
    out.error = error.code();
    out.what = error.what();
  }
  return out;
}

}  // namespace streamlock::test
