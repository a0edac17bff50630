// The per-connection loop. Earns: the keep-alive loop on the guarded stream (two system calls per
// request, see guarded_stream.h), idle connections that give their thread up to queued ones (the
// hostile test "400 idle connections against 64 threads"), the lingering close after an unread
// body (the test "a request with a body does not spoil the next request"), and the SOMAXCONN
// backlog (bursts of reconnects lost SYNs and waited seconds: bench/load/tuning.md).
#include "http/http_server.h"

#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <string_view>

#include "http/guarded_stream.h"
#include "http/task_queue.h"

namespace mothership {
namespace {

// What the override below relies on, and why it is checked at compile time: it overrides the
// private virtual Server::process_and_close_socket, calls the protected Server::process_request,
// reads svr_sock_ (listening on it again after bind), uses new_task_queue for the accept loop, expects
// write_response to write the status line and headers before the body (GuardedStream::write sends
// them together), and Range headers to be parsed before setup_request (GuardedStream drops them
// earlier). Another version may differ in any of these: read it, then raise this.
constexpr bool sameText(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || sameText(a + 1, b + 1));
}
static_assert(sameText(CPPHTTPLIB_VERSION, "0.11.4"),
              "examples/mothership_server/http was written against cpp-httplib 0.11.4 (Debian bookworm's "
              "libcpp-httplib-dev): check process_and_close_socket and process_request before building "
              "it against another version");

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Set by the handlers of the request this thread is serving; read by its connection loop.
thread_local bool t_closeAfter = false;

// Closes after a response that left request bytes unread: stops sending, reads and discards what
// the client still sends (briefly, boundedly), then closes, so that the client reads the response
// instead of a reset.
void lingeringClose(int sock) {
  ::shutdown(sock, SHUT_WR);
  const auto deadline = Clock::now() + milliseconds{500};
  std::size_t drained = 0;
  char chunk[16384];
  while (drained < 256 * 1024) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd entry{sock, POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(left.count())) <= 0) break;
    const auto n = ::recv(sock, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n <= 0) break;
    drained += static_cast<std::size_t>(n);
  }
  ::close(sock);
}

void refuse(int sock) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
      "Retry-After: 1\r\nConnection: close\r\nContent-Length: 31\r\n\r\n{\"error\":\"Service unavailable\"}";
  // Never blocks the accepting thread: what does not fit in the socket buffer is lost.
  (void)::send(sock, kBusy.data(), kBusy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

// One open file per connection: use all the descriptors the hard limit allows.
void raiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

HttpServer::HttpServer(const HttpLimits& limits) : limits_(limits) {
  raiseOpenFileLimit();
  new_task_queue = [this] { return new BoundedTaskQueue(limits_.threads, limits_.maxQueued, waiting_); };
  // httplib reads these only for its Keep-Alive response header; the loop below enforces them.
  set_keep_alive_max_count(limits.keepAliveMaxCount);
  set_keep_alive_timeout(std::max<time_t>(1, static_cast<time_t>(limits.keepAlive.count() / 1000)));
  set_payload_max_length(64 * 1024);
  // Linux copies TCP_NODELAY from the listening socket to the accepted ones. Without it, the last
  // short segment of a response sent in pieces waits for the client's delayed ACK (about 40 ms).
  set_tcp_nodelay(true);
}

void HttpServer::widenListenBacklog() noexcept {
  // On the thread that bound the socket, before another thread can close it (stop()).
  if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, SOMAXCONN);
}

void HttpServer::closeAfterResponse() noexcept { t_closeAfter = true; }

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (BoundedTaskQueue::refusing()) {
    refuse(sock);
    return false;
  }
  GuardedStream connection(sock, limits_, waiting_);
  bool ok = false;
  bool linger = false;
  for (std::size_t left = limits_.keepAliveMaxCount; left > 0; --left) {
    if (!connection.awaitRequest(svr_sock_)) break;
    connection.startRequest();
    t_closeAfter = false;
    bool connectionClosed = false;
    ok = process_request(connection, /*close_connection=*/left == 1, connectionClosed,
                         [](httplib::Request& req) { req.ranges.clear(); });
    if (!connection.flush()) ok = false;  // the whole response in one send
    if (t_closeAfter || connection.broken()) {
      linger = true;
      break;
    }
    if (!ok || connectionClosed) break;
  }
  t_closeAfter = false;
  if (linger) {
    lingeringClose(sock);
  } else {
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
  }
  return ok;
}

}  // namespace mothership
