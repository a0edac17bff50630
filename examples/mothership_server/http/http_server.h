#pragma once

// The demo's HTTP server: one event loop thread serves every connection, and httplib parses each
// request and writes each response.
//
// cpp-httplib 0.11.4 gives each connection a thread of its own, and its handlers must answer
// before they return. On 2 cores that cost dearly: with 32 busy connections a request woke two
// threads and slept twice, and about half the server's CPU was kernel time, a third of that
// switching threads (bench/load/tuning.md). So HttpServer keeps httplib's request parsing, its routing
// hooks (pre-routing and error handlers) and its response writer, and replaces how connections are
// served:
//
// - one epoll loop (serve()) accepts, reads and writes every connection, non-blocking: a request
//   costs one recv() and one send() (more only when the socket is not ready), and wake-ups are
//   shared by all the requests ready at once;
// - a request whose head (request line and headers) is whole goes to httplib's process_request
//   (request_stream.h). A route that answers at once (404, 405, the page, /metrics) is sent at
//   once. A route that needs the database or Redis asks for later() (responder.h): its answer is
//   delivered from the library's I/O thread, and the loop runs process_request again with the
//   answer ready, so that httplib writes it as it writes any other (its writer is private). That
//   second run reads only what the writer needs of the head (answerHead, request_stream.h). The
//   blocking route (/healthz) runs on a few threads of its own (task_queue.h);
// - limits no client can exhaust: a deadline and a byte budget per request head, an idle
//   keep-alive deadline, a write deadline, at most maxConnections open (past them the longest idle
//   one is closed, else the new one gets 503);
// - a connection closed after a response (a body left unread, its last request, stopping) is
//   closed with a lingering close: no reset destroys answers its client has not read yet. A client
//   that half-closes (ends its input) still gets the answers to the requests it sent;
// - stop() (any thread) closes the listening socket and the idle connections, lets the requests
//   in flight finish and send their response (with "Connection: close"), then serve() returns.
//
// It calls the protected Server::process_request and relies on how 0.11.4 parses a request and
// calls its handlers: http_server.cpp refuses to compile against another version.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <httplib.h>

#include "http/limits.h"
#include "http/responder.h"

namespace mothership {

class BoundedTaskQueue;

class HttpServer : public httplib::Server, public Responder {
 public:
  explicit HttpServer(const HttpLimits& limits);
  ~HttpServer() override;

  // After bind_to_port() or bind_to_any_port(), before serve(): listens again with a backlog of
  // SOMAXCONN instead of httplib's 5, which drops the SYNs of a burst of connects (each then waits
  // seconds to retry). Listening again only widens the backlog.
  void widenListenBacklog() noexcept;

  // Serves on the calling thread until stop(); true when it stopped cleanly.
  bool serve();

  // Any thread, any time (before serve() too): serve() returns once the requests in flight are
  // answered. Idempotent.
  void stop() noexcept;

  // For httplib's handlers (pre-routing, error handler), which run on the loop thread: the
  // connection of the request being handled closes after its response.
  void closeAfterResponse() noexcept;

  // For the pre-routing handler: the answer delivered for the request being handled, when httplib
  // runs it the second time; null the first time.
  const Fill* deliveredAnswer() const noexcept { return answer_; }

  // For the pre-routing handler: the head of the request being handled has a header line that
  // httplib would misread (request_stream.h, HeadScanner::malformed); it deserves 400.
  bool malformedHead() const noexcept;

  // Responder, for the request being handled (loop thread only).
  Deliver later() override;
  void blocking(std::function<void(bool refused)> task) override;

 private:
  struct Connection;
  struct Delivered {
    int fd;
    std::uint64_t serial;
    Fill fill;
  };
  using Clock = std::chrono::steady_clock;

  void accept(Clock::time_point now);
  bool closeLongestIdle();
  void onReadable(Connection& c, Clock::time_point now);
  void onWritable(Connection& c, Clock::time_point now);
  void serveNext(Connection& c, Clock::time_point now);
  void runRequest(Connection& c, const Fill* answer, Clock::time_point now);
  void afterRequest(Connection& c, bool ok, bool connectionClosed, Clock::time_point now);
  void send(Connection& c, Clock::time_point now);
  void afterResponse(Connection& c, Clock::time_point now);
  void runDelivered(Clock::time_point now);
  void sweep(Clock::time_point now);
  void watch(Connection& c, std::uint32_t events);
  void close(Connection& c);
  void deliver(int fd, std::uint64_t serial, Fill fill);

  const HttpLimits limits_;
  int epoll_ = -1;
  int wake_ = -1;  // eventfd: an answer was delivered, or stop()
  std::atomic<bool> stopping_{false};
  bool listening_ = false;
  std::vector<std::unique_ptr<Connection>> connections_;  // by descriptor
  std::size_t open_ = 0;
  std::uint64_t serials_ = 0;
  bool acceptPaused_ = false;  // out of descriptors: the listener is out of the epoll set until the next sweep

  // The request being handled by httplib, on the loop thread.
  Connection* current_ = nullptr;
  const Fill* answer_ = nullptr;

  std::mutex deliveredMutex_;
  std::vector<Delivered> delivered_;  // answers delivered, not yet sent

  std::unique_ptr<BoundedTaskQueue> blocking_;
};

}  // namespace mothership
