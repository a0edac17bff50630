#pragma once

// httplib::Server with connection handling that hostile clients cannot exhaust, and few system
// calls per request. cpp-httplib 0.11.4 gives each connection a pool thread until it closes, queues
// accepted connections without limit, bounds a request only per recv(), and honours any Range
// header. HttpServer keeps httplib's request parsing, routing hooks, responses and stop(), and
// replaces three parts, one file each:
//
// - task_queue.h, the bounded task queue: a fixed set of threads, at most maxQueued connections
//   waiting for one, the next ones refused with 503;
// - guarded_stream.h, the guarded connection stream: a deadline and a byte budget per request,
//   Range headers dropped, the next request awaited with one recv() and each response sent with
//   one sendmsg();
// - http_server.cpp, the per-connection loop (Server::process_and_close_socket): idle connections
//   give their thread up while others queue, a connection whose request body was not read is
//   closed with a lingering close, and the listen backlog is SOMAXCONN instead of httplib's 5
//   (widenListenBacklog()).
//
// The loop overrides a private virtual of httplib and relies on how 0.11.4 writes a response and
// parses Range headers: http_server.cpp refuses to compile against another version.

#include <atomic>
#include <cstddef>

#include <httplib.h>

#include "http/limits.h"

namespace mothership {

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(const HttpLimits& limits);

  // After bind_to_port() or bind_to_any_port(), before listen_after_bind(): listens again with a
  // backlog of SOMAXCONN instead of httplib's 5, which drops the SYNs of a burst of connects (each
  // then waits seconds to retry). Listening again only widens the backlog.
  void widenListenBacklog() noexcept;

  // The connection of the request that this thread is handling closes after its response. For
  // httplib's handlers only (pre-routing, error handler); a no-op on other threads.
  static void closeAfterResponse() noexcept;

 private:
  bool process_and_close_socket(socket_t sock) override;

  const HttpLimits limits_;
  std::atomic<std::size_t> waiting_{0};  // accepted connections that wait for a busy thread
};

}  // namespace mothership
