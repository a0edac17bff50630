#pragma once

// The limits of the demo's HTTP layer (http_server.h puts them together): how many connections are
// served at once and queued, and how long and how large one request may be.

#include <chrono>
#include <cstddef>

namespace mothership {

struct HttpLimits {
  std::size_t threads = 1024;                         // connections served at once, one thread each
  std::size_t maxQueued = 1024;                       // accepted connections waiting for a thread
  std::chrono::milliseconds keepAlive{3000};          // idle wait for a connection's next request
  std::chrono::milliseconds idlePressureGrace{100};   // the same while connections queue
  std::chrono::milliseconds requestTimeout{5000};     // one whole request, from its first byte
  std::chrono::milliseconds requestTimeoutUnderPressure{2000};  // the same while connections queue
  std::chrono::milliseconds stallUnderPressure{1000}; // longest silence mid-request while connections queue
  std::chrono::milliseconds writeTimeout{5000};       // one send() making no progress
  std::size_t maxRequestBytes = 192 * 1024;           // request line + headers (+ any body read)
  std::size_t keepAliveMaxCount = 100;                // requests per connection
};

}  // namespace mothership
