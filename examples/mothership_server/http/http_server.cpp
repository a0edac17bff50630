// The event loop (http_server.h). Earns: the whole load-test figure (one thread instead of one per
// connection, bench/load/tuning.md), the hostile tests (stalling, trickling and idle clients hold
// a few bytes each, never a thread), the lingering close after an unread body (the test "a request
// with a body does not spoil the next request"), and the SOMAXCONN backlog (bursts of reconnects
// lost SYNs and waited seconds).
#include "http/http_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "http/request_stream.h"
#include "log.h"
#include "http/task_queue.h"

namespace mothership {
namespace {

// What this file relies on, and why it is checked at compile time: it calls the protected
// Server::process_request, with a stream that holds only the request's head; it expects the
// pre-routing handler to be called before any body is read and the error handler for every status
// of 400 and above, Range headers to be parsed before setup_request (RequestStream drops them
// earlier), and reads svr_sock_ after bind. Another version may differ in any of these: read it,
// then raise this.
constexpr bool sameText(const char* a, const char* b) {
  return *a == *b && (*a == '\0' || sameText(a + 1, b + 1));
}
static_assert(sameText(CPPHTTPLIB_VERSION, "0.11.4"),
              "examples/mothership_server/http was written against cpp-httplib 0.11.4 (Debian bookworm's "
              "libcpp-httplib-dev): check process_request and its handlers before building it against another "
              "version");

using std::chrono::milliseconds;

// How often deadlines are looked at: they are enforced within this.
constexpr milliseconds kSweep{100};

// A connection keeps its response buffer for the next response up to this size.
constexpr std::size_t kKeptBuffer = 64 * 1024;

// One recv() reads at most this much.
constexpr std::size_t kReadChunk = 16384;

void refuse(int sock) {
  static constexpr std::string_view kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
      "Retry-After: 1\r\nConnection: close\r\nContent-Length: 31\r\n\r\n{\"error\":\"Service unavailable\"}";
  // What does not fit in the new socket's buffer is lost.
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

struct HttpServer::Connection {
  // Reading: waiting for (the rest of) a request head. Answering: httplib has it, its answer
  // comes later. Writing: a response is being sent. Lingering: after a response that left a body
  // unread, draining what the client still sends before closing.
  enum class State { Reading, Answering, Writing, Lingering };

  int fd = -1;
  std::uint64_t serial = 0;           // of the current request: a delivery for another one is stale
  State state = State::Reading;
  std::uint32_t events = 0;           // what epoll watches (0: not in its set)
  std::string in;                     // received, not yet handled
  HeadScanner scanner;                // where the head in `in` ends
  std::string head;                   // the request being answered
  std::string out;                    // the response being sent, from sent
  std::size_t sent = 0;
  std::size_t requests = 0;           // requests started on this connection
  bool lastRequest = false;           // the current one is the last (keep-alive count)
  bool closeAfter = false;            // a handler asked for it
  bool keepAlive = false;             // after the response, wait for the next request
  bool inputDone = false;             // the client has sent all it will send (end of input)
  bool malformed = false;             // the head has a header line httplib would misread
  std::size_t drained = 0;            // bytes read while lingering
  Clock::time_point deadline{};       // of the current state (none while answering)
  Clock::time_point idleSince{};
  Address remote, local;
};

HttpServer::HttpServer(const HttpLimits& limits) : limits_(limits) {
  raiseOpenFileLimit();
  epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_ < 0 || wake_ < 0) throw std::system_error(errno, std::generic_category(), "epoll");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_;
  ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &event);
  blocking_ = std::make_unique<BoundedTaskQueue>(limits_.blockingThreads, limits_.blockingQueue);
  // httplib reads these only for its Keep-Alive response header; the loop enforces them.
  set_keep_alive_max_count(limits.keepAliveMaxCount);
  set_keep_alive_timeout(std::max<time_t>(1, static_cast<time_t>(limits.keepAlive.count() / 1000)));
  set_payload_max_length(64 * 1024);
  // Linux copies TCP_NODELAY from the listening socket to the accepted ones. Without it, the last
  // short segment of a response sent in pieces waits for the client's delayed ACK (about 40 ms).
  set_tcp_nodelay(true);
}

HttpServer::~HttpServer() {
  blocking_->shutdown();  // its tasks deliver into this server
  for (auto& c : connections_) {
    if (c) ::close(c->fd);
  }
  ::close(wake_);
  ::close(epoll_);
}

void HttpServer::widenListenBacklog() noexcept {
  if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, SOMAXCONN);
}

void HttpServer::stop() noexcept {
  if (stopping_.exchange(true)) return;
  const std::uint64_t one = 1;
  (void)::write(wake_, &one, sizeof one);
}

void HttpServer::closeAfterResponse() noexcept {
  if (current_ != nullptr) current_->closeAfter = true;
}

bool HttpServer::malformedHead() const noexcept { return current_ != nullptr && current_->malformed; }

Deliver HttpServer::later() {
  Connection& c = *current_;
  c.state = Connection::State::Answering;
  return [this, fd = c.fd, serial = c.serial](Fill fill) { deliver(fd, serial, std::move(fill)); };
}

void HttpServer::blocking(std::function<void(bool refused)> task) {
  if (!blocking_->tryEnqueue([task] { task(false); })) task(true);
}

void HttpServer::deliver(int fd, std::uint64_t serial, Fill fill) {
  bool wasEmpty = false;
  {
    const std::lock_guard<std::mutex> lock(deliveredMutex_);
    wasEmpty = delivered_.empty();
    delivered_.push_back({fd, serial, std::move(fill)});
  }
  // The loop takes every delivered answer when it wakes: one wake-up for all that came meanwhile.
  if (wasEmpty) {
    const std::uint64_t one = 1;
    (void)::write(wake_, &one, sizeof one);
  }
}

bool HttpServer::serve() {
  const int listener = svr_sock_;
  if (listener == INVALID_SOCKET) return false;
  const int flags = ::fcntl(listener, F_GETFL);
  ::fcntl(listener, F_SETFL, flags | O_NONBLOCK);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = listener;
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, listener, &event) != 0) return false;
  listening_ = true;

  std::vector<epoll_event> events(256);
  auto nextSweep = Clock::now() + kSweep;
  examples::holdAccessLog();
  for (;;) {
    examples::flushAccessLog();  // the lines of the requests answered since the last wait
    if (stopping_.load() && listening_) {
      if (!acceptPaused_) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listener, nullptr);
      listening_ = false;
      sweep(Clock::now());  // closes the connections that wait for a request
    }
    if (!listening_ && open_ == 0) break;
    // Rounded up: rounded down, the last millisecond before a sweep was spent in epoll_wait(0)
    // calls, thousands of them per second even with no connection open.
    const auto wait = std::chrono::ceil<milliseconds>(nextSweep - Clock::now()).count();
    const int ready = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()),
                                   static_cast<int>(std::clamp<milliseconds::rep>(wait, 0, kSweep.count())));
    if (ready < 0 && errno != EINTR) {
      examples::flushAccessLog();
      return false;
    }
    const auto now = Clock::now();
    for (int i = 0; i < ready; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      const auto what = events[static_cast<std::size_t>(i)].events;
      if (fd == wake_) {
        std::uint64_t count = 0;
        (void)::read(wake_, &count, sizeof count);
        runDelivered(now);
      } else if (fd == listener) {
        accept(now);
      } else if (static_cast<std::size_t>(fd) < connections_.size() && connections_[static_cast<std::size_t>(fd)]) {
        Connection& c = *connections_[static_cast<std::size_t>(fd)];
        if (c.state == Connection::State::Writing && (what & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
          onWritable(c, now);
        } else {
          onReadable(c, now);
        }
      }
    }
    if (now >= nextSweep) {
      sweep(now);
      nextSweep = now + kSweep;
    }
  }
  examples::flushAccessLog();
  ::close(listener);
  svr_sock_ = INVALID_SOCKET;
  return true;
}

void HttpServer::accept(Clock::time_point now) {
  for (;;) {
    const int sock = ::accept4(svr_sock_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (sock < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: make room, else leave the connects in the backlog until the next
        // sweep (the listener out of the epoll set meanwhile, which would report it at once).
        if (!closeLongestIdle()) {
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, svr_sock_, nullptr);
          acceptPaused_ = true;
        }
      }
      return;
    }
    if (open_ >= limits_.maxConnections && !closeLongestIdle()) {
      refuse(sock);
      continue;
    }
    if (static_cast<std::size_t>(sock) >= connections_.size()) connections_.resize(static_cast<std::size_t>(sock) + 1);
    auto c = std::make_unique<Connection>();
    c->fd = sock;
    c->serial = ++serials_;
    c->idleSince = now;
    c->deadline = now + limits_.keepAlive;
    c->remote = addressOf(sock, getpeername);
    c->local = addressOf(sock, getsockname);
    Connection& added = *c;
    connections_[static_cast<std::size_t>(sock)] = std::move(c);
    ++open_;
    watch(added, EPOLLIN);
  }
}

// Closes the connection that has waited longest for its next request, if one does. A connection
// just accepted counts only once it is seen to have sent nothing: the bytes of its request may
// wait in the socket, not yet read.
bool HttpServer::closeLongestIdle() {
  std::vector<Connection*> idle;
  for (auto& c : connections_) {
    if (c && c->state == Connection::State::Reading && c->in.empty()) idle.push_back(c.get());
  }
  // The oldest first, one at a time: usually the first one is idle (no sort of them all per accept).
  while (!idle.empty()) {
    const auto oldest = std::min_element(idle.begin(), idle.end(), [](const Connection* a, const Connection* b) {
      return a->idleSince < b->idleSince;
    });
    Connection* c = *oldest;
    char byte = 0;
    if (::recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {  // a request is waiting: not idle
      *oldest = idle.back();
      idle.pop_back();
      continue;
    }
    close(*c);  // idle, or closed by the peer already
    return true;
  }
  return false;
}

void HttpServer::onReadable(Connection& c, Clock::time_point now) {
  char chunk[kReadChunk];
  if (c.state == Connection::State::Lingering) {
    for (;;) {
      const auto n = ::recv(c.fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n > 0 && (c.drained += static_cast<std::size_t>(n)) < limits_.lingerBytes) continue;
      return close(c);  // the client closed, failed, or sent too much
    }
  }
  // Writing watches only for room to send: a read event here is stale (reported with others).
  if (c.state == Connection::State::Writing) return;
  // While a request is answered, its successors (pipelined) wait in `in`, within the budget.
  const std::size_t room = limits_.maxRequestBytes > c.in.size() ? limits_.maxRequestBytes - c.in.size() : 0;
  if (room == 0) {
    if (c.state == Connection::State::Reading) return close(c);  // a head over the budget
    watch(c, 0);  // read again after the response
    return;
  }
  ssize_t n = 0;
  do {
    n = ::recv(c.fd, chunk, std::min(room, sizeof chunk), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n <= 0) {
    // Waiting for a request, the client left. Answering, it may have only half-closed (sent all
    // its requests, then shut down its side, as `nc -N` does): its answer is still sent, with the
    // complete requests read after it, then the connection closes. Reset, the send fails.
    if (c.state == Connection::State::Reading) return close(c);
    c.inputDone = true;
    watch(c, 0);
    return;
  }
  const bool first = c.in.empty();
  c.in.append(chunk, static_cast<std::size_t>(n));
  if (c.state != Connection::State::Reading) return;
  if (first) c.deadline = now + limits_.requestTimeout;  // a request starts with its first byte
  serveNext(c, now);
}

// Starts the request whose bytes are in c.in, once its head is whole.
void HttpServer::serveNext(Connection& c, Clock::time_point now) {
  const auto headLength = c.scanner.scan(c.in);
  if (headLength == 0) {
    if (c.in.size() >= limits_.maxRequestBytes) close(c);  // a head over the budget
    return;
  }
  c.head.assign(c.in, 0, headLength);
  c.in.erase(0, headLength);
  c.malformed = c.scanner.malformed();
  c.scanner.reset();
  c.serial = ++serials_;
  c.lastRequest = ++c.requests >= limits_.keepAliveMaxCount;
  c.closeAfter = false;
  runRequest(c, nullptr, now);
}

// Runs httplib on the current head: the first time (answer null), or again with the answer that
// was delivered for it.
void HttpServer::runRequest(Connection& c, const Fill* answer, Clock::time_point now) {
  c.out.clear();
  c.sent = 0;
  RequestStream stream(c.fd, c.head, c.out, c.remote, c.local);
  bool connectionClosed = false;
  current_ = &c;
  answer_ = answer;
  // Stopping, or at its last request: httplib says "Connection: close" in the response.
  const bool ok = process_request(stream, c.lastRequest || stopping_.load(), connectionClosed,
                                  [](httplib::Request& req) { req.ranges.clear(); });
  current_ = nullptr;
  answer_ = nullptr;
  if (answer == nullptr && c.state == Connection::State::Answering) {
    c.out.clear();  // later(): the answer is delivered, and this run's output dropped
    return;
  }
  afterRequest(c, ok, connectionClosed, now);
}

void HttpServer::afterRequest(Connection& c, bool ok, bool connectionClosed, Clock::time_point now) {
  c.keepAlive = ok && !connectionClosed && !c.closeAfter && !c.lastRequest && !stopping_.load();
  c.state = Connection::State::Writing;
  c.deadline = now + limits_.writeTimeout;
  send(c, now);
}

void HttpServer::send(Connection& c, Clock::time_point now) {
  while (c.sent < c.out.size()) {
    const auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<std::size_t>(n);
      c.deadline = now + limits_.writeTimeout;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch(c, EPOLLOUT);
      return;
    }
    return close(c);
  }
  afterResponse(c, now);
}

void HttpServer::onWritable(Connection& c, Clock::time_point now) { send(c, now); }

void HttpServer::afterResponse(Connection& c, Clock::time_point now) {
  c.out.clear();
  if (c.out.capacity() > kKeptBuffer) c.out.shrink_to_fit();  // a large page is not kept per connection
  c.head.clear();
  if (c.keepAlive && !stopping_.load()) {
    c.state = Connection::State::Reading;
    c.idleSince = now;
    c.deadline = now + (c.in.empty() ? limits_.keepAlive : limits_.requestTimeout);
    if (!c.inputDone) {
      watch(c, EPOLLIN);
      if (!c.in.empty()) serveNext(c, now);  // pipelined
      return;
    }
    // Half-closed: the complete requests it sent are answered, then the connection closes.
    const auto fd = static_cast<std::size_t>(c.fd);
    if (!c.in.empty()) serveNext(c, now);  // may answer (and close) at once
    if (connections_[fd].get() == &c && c.state == Connection::State::Reading) close(c);
    return;
  }
  if (c.inputDone) return close(c);  // nothing more can arrive: a plain close loses nothing
  // Closing while the client may still be sending (a body left unread, requests pipelined after
  // the last one answered, or just sent): closing a socket with unread input sends a reset, which
  // can destroy the responses the client has not read yet. So stop sending, drain what the
  // client still sends until it closes, then close.
  ::shutdown(c.fd, SHUT_WR);
  c.state = Connection::State::Lingering;
  c.drained = c.in.size();
  c.in.clear();
  c.deadline = now + limits_.lingerTimeout;
  watch(c, EPOLLIN);
}

void HttpServer::runDelivered(Clock::time_point now) {
  std::vector<Delivered> batch;
  {
    const std::lock_guard<std::mutex> lock(deliveredMutex_);
    batch.swap(delivered_);
  }
  for (auto& answer : batch) {
    const auto index = static_cast<std::size_t>(answer.fd);
    if (index >= connections_.size() || !connections_[index] || connections_[index]->serial != answer.serial) continue;
    Connection& c = *connections_[index];
    if (c.state != Connection::State::Answering) continue;
    c.head = answerHead(c.head);  // what the second run needs of it
    runRequest(c, &answer.fill, now);
  }
}

// Enforces the deadlines; while stopping, also closes every connection that waits for a request.
void HttpServer::sweep(Clock::time_point now) {
  const bool stopping = stopping_.load();
  if (acceptPaused_ && listening_) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = svr_sock_;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, svr_sock_, &event);
    acceptPaused_ = false;
  }
  for (auto& entry : connections_) {
    if (!entry) continue;
    Connection& c = *entry;
    switch (c.state) {
      case Connection::State::Answering: break;
      case Connection::State::Reading:
        if (stopping || now >= c.deadline) close(c);
        break;
      case Connection::State::Writing:
      case Connection::State::Lingering:
        if (now >= c.deadline) close(c);
        break;
    }
  }
}

// What epoll reports for c: events, or nothing at all (0: out of the set, since epoll reports a
// hang-up or an error even to a descriptor that asks for no event).
void HttpServer::watch(Connection& c, std::uint32_t events) {
  if (c.events == events) return;
  epoll_event event{};
  event.events = events;
  event.data.fd = c.fd;
  const int op = events == 0 ? EPOLL_CTL_DEL : c.events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  ::epoll_ctl(epoll_, op, c.fd, &event);
  c.events = events;
}

void HttpServer::close(Connection& c) {
  const int fd = c.fd;
  ::close(fd);  // also leaves the epoll set
  connections_[static_cast<std::size_t>(fd)].reset();
  --open_;
}

}  // namespace mothership
