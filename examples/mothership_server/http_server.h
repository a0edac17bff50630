#pragma once

// httplib::Server with connection handling that hostile clients cannot exhaust. cpp-httplib 0.11.4
// gives each connection a pool thread until it closes, bounds a request only per recv() (a client
// trickling one byte every few seconds keeps its thread forever), grows a request or header line
// without limit until its '\n', queues accepted connections without limit, and honours Range
// headers with any number of ranges (a few KB of "bytes=0-,0-,..." turn a page into megabytes).
// HttpServer replaces its per-connection loop (Server::process_and_close_socket) and task queue:
//
// - each request (request line, headers and any body read) must arrive within requestTimeout of
//   its first byte (requestTimeoutUnderPressure, with at most stallUnderPressure of silence, while
//   other connections queue for a thread), and may be at most maxRequestBytes; past either the
//   connection is dropped (after a 400 when httplib was reading headers);
// - an idle connection waits keepAlive for its next request, but only idlePressureGrace while other
//   connections queue for a thread: idle sockets give their threads up to real requests;
// - at most maxQueued accepted connections wait for a thread; the next ones get 503 and are closed;
//   the listen backlog is SOMAXCONN instead of httplib's 5, so that bursts of connects queue here;
// - Range headers are dropped before httplib parses them (every answer is the whole response);
// - a connection is closed after any request whose body is not read (closeAfterResponse()), with
//   a lingering close, so that unread bytes are never parsed as a next request;
// - a response leaves in one sendmsg (httplib's headers are buffered and sent with the body),
//   a request's bytes are received without a poll first when they are already there, and the
//   peer and local addresses that httplib asks for on every request are looked up once: three
//   system calls per keep-alive request where httplib's own loop makes about nine.
//
// Everything else (request parsing, routing hooks, responses, stop()) is httplib's.

#include <atomic>
#include <chrono>
#include <cstddef>

#include <httplib.h>

namespace mothership {

struct HttpLimits {
  std::size_t threads = 256;
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

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(const HttpLimits& limits);

  // The connection of the request that this thread is handling closes after its response. For
  // httplib's handlers only (pre-routing, error handler); a no-op on other threads.
  static void closeAfterResponse() noexcept;

 private:
  bool process_and_close_socket(socket_t sock) override;

  const HttpLimits limits_;
  std::atomic<std::size_t> queued_{0};  // accepted connections waiting for a thread
};

}  // namespace mothership
