#pragma once

// The limits of the demo's HTTP layer (http_server.h puts them together): how many connections are
// open at once, and how long and how large one request may be.

#include <chrono>
#include <cstddef>

namespace mothership {

struct HttpLimits {
  std::size_t maxConnections = 5120;                  // open at once; past them an idle one is closed, else 503
  std::size_t blockingThreads = 4;                    // threads for the routes that block (/healthz)
  std::size_t blockingQueue = 64;                     // their requests waiting for one; past them 503
  std::chrono::milliseconds keepAlive{3000};          // idle wait for a connection's next request
  std::chrono::milliseconds requestTimeout{5000};     // one whole request head, from its first byte
  std::chrono::milliseconds writeTimeout{5000};       // a response making no progress
  std::chrono::milliseconds lingerTimeout{500};       // draining unread input before closing
  std::size_t lingerBytes = 256 * 1024;               // the most of it drained
  std::size_t maxRequestBytes = 192 * 1024;           // request line + headers
  std::size_t keepAliveMaxCount = 100;                // requests per connection
};

}  // namespace mothership
