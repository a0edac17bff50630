#include "http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace mothership {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Set by the task queue around a connection it refuses (run on the accepting thread).
thread_local bool t_refuse = false;
// Set by the handlers of the request this thread is serving; read by its connection loop.
thread_local bool t_closeAfter = false;

int pollOne(int fd, short events, milliseconds timeout) {
  pollfd entry{fd, events, 0};
  for (;;) {
    const int ready = ::poll(&entry, 1, static_cast<int>(std::max<milliseconds::rep>(timeout.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    return ready;
  }
}

milliseconds until(Clock::time_point deadline) {
  return std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
}

// A "Range:" header line (any case), which httplib would parse with std::regex and then honour.
bool isRangeHeader(std::string_view line) {
  constexpr std::string_view kName = "range:";
  if (line.size() < kName.size()) return false;
  for (std::size_t i = 0; i < kName.size(); ++i) {
    const char c = line[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kName[i]) return false;
  }
  return true;
}

// The address that getpeername or getsockname gives for sock, as text and port.
std::pair<std::string, int> addressOf(int sock, int (*get)(int, sockaddr*, socklen_t*)) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  char text[INET6_ADDRSTRLEN] = {};
  int port = 0;
  if (get(sock, reinterpret_cast<sockaddr*>(&address), &length) != 0) return {std::string(), 0};
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    port = ntohs(v4.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    port = ntohs(v6.sin6_port);
  }
  return {text, port};
}

// The worker threads and the bounded queue of accepted connections. A connection past the bound
// is run at once on the accepting thread with t_refuse set: it is answered 503 and closed.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  ConnectionPool(std::size_t threads, std::size_t maxQueued, std::atomic<std::size_t>& queued)
      : maxQueued_(maxQueued), queued_(queued) {
    threads_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }

  ~ConnectionPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (jobs_.size() < maxQueued_) {
        jobs_.push_back(std::move(fn));
        queued_.store(jobs_.size());
        ready_.notify_one();
        return;
      }
    }
    t_refuse = true;
    run(fn);
    t_refuse = false;
  }

  void shutdown() override {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads_) thread.join();  // the queued connections are served (and closed) first
  }

 private:
  static void run(const std::function<void()>& fn) {
    try {
      fn();
    } catch (...) {
      // process_and_close_socket throws only std::bad_alloc; the pool goes on.
    }
  }

  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !jobs_.empty() || stopping_; });
        if (jobs_.empty()) return;
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        queued_.store(jobs_.size());
      }
      run(fn);
    }
  }

  const std::size_t maxQueued_;
  std::atomic<std::size_t>& queued_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// One client connection as httplib reads and writes it: buffered, with a deadline and a byte
// budget per request, a shorter patience while other connections queue, and Range header lines
// left out of what httplib sees.
class Connection final : public httplib::Stream {
 public:
  Connection(int sock, const HttpLimits& limits, const std::atomic<std::size_t>& queued)
      : sock_(sock), limits_(limits), queued_(queued) {}

  // Waits for the first byte of the next request: true when there is one (or the peer closed,
  // which the next read reports). False when the connection idled out or the server stops.
  bool awaitRequest(const std::atomic<int>& listening) {
    if (pos_ < buffer_.size()) return true;  // pipelined
    const auto start = Clock::now();
    for (;;) {
      if (listening.load() == INVALID_SOCKET) return false;
      const auto patience = underPressure() ? limits_.idlePressureGrace : limits_.keepAlive;
      const auto left = patience - std::chrono::duration_cast<milliseconds>(Clock::now() - start);
      if (left.count() <= 0) return false;
      const int ready = pollOne(sock_, POLLIN, std::min(left, milliseconds{50}));
      if (ready != 0) return true;
    }
  }

  // A new request starts: its deadline and budget.
  void startRequest() {
    started_ = Clock::now();
    deadline_ = started_ + limits_.requestTimeout;
    lastProgress_ = Clock::now();
    delivered_ = 0;
    inHead_ = true;
    atLineStart_ = true;
    headLines_ = 0;
  }

  // A read hit the deadline, the budget or an error: the connection is not reused.
  bool broken() const { return broken_; }

  bool is_readable() const override {
    return pos_ < buffer_.size() || pollOne(sock_, POLLIN, milliseconds{0}) > 0;
  }

  // Small writes (httplib's status line and headers) are buffered; the next large one (a body)
  // leaves together with them in one sendmsg, without being copied, and flush() sends the rest
  // after each request. Always writable until a send failed.
  bool is_writable() const override { return !writeFailed_; }

  ssize_t read(char* ptr, size_t size) override {
    if (size == 0) return 0;
    if (inHead_) return readHead(ptr, size);
    if (pos_ == buffer_.size() && !fill()) return eof_ && !broken_ ? 0 : -1;
    return deliver(ptr, std::min(size, buffer_.size() - pos_));
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (writeFailed_) return -1;
    if (out_.size() + size < kSendDirectly) {
      out_.append(ptr, size);
      return static_cast<ssize_t>(size);
    }
    const bool sent = sendAll(out_, std::string_view(ptr, size));
    out_.clear();
    return sent ? static_cast<ssize_t>(size) : -1;
  }

  // Sends what write() buffered. False when the bytes could not all be sent.
  bool flush() {
    if (out_.empty()) return !writeFailed_;
    const bool sent = sendAll(out_, std::string_view());
    out_.clear();
    return sent;
  }

  // The addresses of a connection never change: asked once (httplib asks for every request).
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    if (!remote_) remote_ = addressOf(sock_, getpeername);
    ip = remote_->first;
    port = remote_->second;
  }

  void get_local_ip_and_port(std::string& ip, int& port) const override {
    if (!local_) local_ = addressOf(sock_, getsockname);
    ip = local_->first;
    port = local_->second;
  }

  socket_t socket() const override { return sock_; }

 private:
  bool underPressure() const { return queued_.load() > 0; }

  static constexpr std::size_t kSendDirectly = 2048;

  // Sends first, then second, with as few sendmsg calls as the socket allows. A send that makes no
  // progress for writeTimeout fails the connection.
  bool sendAll(std::string_view first, std::string_view second) {
    iovec parts[2] = {{const_cast<char*>(first.data()), first.size()},
                      {const_cast<char*>(second.data()), second.size()}};
    std::size_t part = first.empty() ? 1 : 0;
    while (!writeFailed_ && part < 2 && parts[part].iov_len > 0) {
      msghdr message{};
      message.msg_iov = parts + part;
      message.msg_iovlen = 2 - part;
      const auto n = ::sendmsg(sock_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && pollOne(sock_, POLLOUT, limits_.writeTimeout) > 0) continue;
        writeFailed_ = true;
        break;
      }
      auto left = static_cast<std::size_t>(n);
      while (part < 2 && left >= parts[part].iov_len) {
        left -= parts[part].iov_len;
        parts[part].iov_len = 0;
        ++part;
      }
      if (part < 2) {
        parts[part].iov_base = static_cast<char*>(parts[part].iov_base) + left;
        parts[part].iov_len -= left;
      }
    }
    return !writeFailed_;
  }

  // The request line and headers, one whole line at a time (so that a Range line can be left out).
  ssize_t readHead(char* ptr, size_t size) {
    if (atLineStart_) {
      for (;;) {
        auto newline = buffer_.find('\n', std::max(pos_, scanned_));
        while (newline == std::string::npos) {
          scanned_ = buffer_.size();
          if (!fill()) {
            // At the end of input, a partial line goes to httplib as it is (it answers 400).
            if (!eof_ || broken_ || pos_ == buffer_.size()) return eof_ && !broken_ ? 0 : -1;
            newline = buffer_.size() - 1;
            break;
          }
          newline = buffer_.find('\n', scanned_);
        }
        const std::string_view line(buffer_.data() + pos_, newline + 1 - pos_);
        const bool header = headLines_++ > 0;
        if (header && isRangeHeader(line)) {
          pos_ += line.size();
          delivered_ += line.size();
          continue;
        }
        lineEnd_ = newline + 1;
        lastHeadLine_ = header && line == "\r\n";
        atLineStart_ = false;
        break;
      }
    }
    const auto n = deliver(ptr, std::min(size, lineEnd_ - pos_));
    if (pos_ == lineEnd_) {
      atLineStart_ = true;
      if (lastHeadLine_) inHead_ = false;
    }
    return n;
  }

  ssize_t deliver(char* ptr, size_t n) {
    std::memcpy(ptr, buffer_.data() + pos_, n);
    pos_ += n;
    delivered_ += n;
    if (pos_ == buffer_.size() && atLineStart_) {
      buffer_.clear();
      pos_ = scanned_ = lineEnd_ = 0;
    }
    return static_cast<ssize_t>(n);
  }

  // Receives more bytes of the current request. False at the end of input (eof_), or when the
  // request broke its deadline or budget, stalled, or the socket failed (broken_).
  bool fill() {
    if (eof_ || broken_) return false;
    const auto seen = delivered_ + (buffer_.size() - pos_);
    if (seen >= limits_.maxRequestBytes) return fail();
    if (pos_ > 0 && pos_ >= buffer_.size() / 2) {  // keep the buffer from creeping
      buffer_.erase(0, pos_);
      scanned_ -= std::min(scanned_, pos_);
      lineEnd_ -= std::min(lineEnd_, pos_);
      pos_ = 0;
    }
    if (!out_.empty() && !flush()) return fail();  // e.g. a 100 Continue the client waits for
    bool tryFirst = true;  // the bytes are usually there already: recv before poll
    for (;;) {
      if (tryFirst) {
        tryFirst = false;
        if (receive()) return true;
        if (eof_ || broken_) return false;
        continue;
      }
      const auto now = Clock::now();
      const bool pressure = underPressure();
      const auto deadline = pressure ? std::min(deadline_, started_ + limits_.requestTimeoutUnderPressure) : deadline_;
      const auto stall = pressure ? limits_.stallUnderPressure : limits_.requestTimeout;
      const auto left = std::min(until(deadline), stall - std::chrono::duration_cast<milliseconds>(now - lastProgress_));
      if (left.count() <= 0) return fail();
      const int ready = pollOne(sock_, POLLIN, std::min(left, milliseconds{100}));
      if (ready < 0) return fail();
      if (ready == 0) continue;
      if (receive()) return true;
      if (eof_ || broken_) return false;
    }
  }

  // One non-blocking recv into buffer_: true when bytes arrived; false with eof_ or broken_ set at
  // the end of input or on an error, or with neither when nothing is there yet.
  bool receive() {
    char chunk[16384];
    const auto seen = delivered_ + (buffer_.size() - pos_);
    const auto room = std::min(sizeof chunk, limits_.maxRequestBytes - seen);
    for (;;) {
      const auto n = ::recv(sock_, chunk, room, MSG_DONTWAIT);
      if (n > 0) {
        buffer_.append(chunk, static_cast<std::size_t>(n));
        lastProgress_ = Clock::now();
        return true;
      }
      if (n == 0) {
        eof_ = true;
        return false;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) fail();
      return false;
    }
  }

  bool fail() {
    broken_ = true;
    return false;
  }

  const int sock_;
  const HttpLimits& limits_;
  const std::atomic<std::size_t>& queued_;
  std::string buffer_;          // received, not yet delivered from pos_
  std::size_t pos_ = 0;
  std::size_t scanned_ = 0;     // buffer_ holds no '\n' in [pos_, scanned_)
  std::size_t lineEnd_ = 0;     // end of the head line being delivered
  std::size_t delivered_ = 0;   // bytes of this request delivered (or left out)
  std::size_t headLines_ = 0;
  bool inHead_ = true;
  bool atLineStart_ = true;
  bool lastHeadLine_ = false;
  bool eof_ = false;
  bool broken_ = false;
  std::string out_;  // the response being written, sent by flush()
  bool writeFailed_ = false;
  mutable std::optional<std::pair<std::string, int>> remote_;
  mutable std::optional<std::pair<std::string, int>> local_;
  Clock::time_point started_{};
  Clock::time_point deadline_{};
  Clock::time_point lastProgress_{};
};

// Closes after a response that left request bytes unread: stops sending, reads and discards what
// the client still sends (briefly, boundedly), then closes, so that the client reads the response
// instead of a reset.
void lingeringClose(int sock) {
  ::shutdown(sock, SHUT_WR);
  const auto deadline = Clock::now() + milliseconds{500};
  std::size_t drained = 0;
  char chunk[16384];
  while (drained < 256 * 1024) {
    const auto left = until(deadline);
    if (left.count() <= 0 || pollOne(sock, POLLIN, left) <= 0) break;
    const auto n = ::recv(sock, chunk, sizeof chunk, 0);
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
  new_task_queue = [this] {
    // Called by listen_after_bind() on the bound socket, before its accept loop: httplib listens
    // with a backlog of 5, which drops the SYNs of a burst of connects (each then waits seconds to
    // retry). Listening again only widens the backlog.
    ::listen(svr_sock_, SOMAXCONN);
    return new ConnectionPool(limits_.threads, limits_.maxQueued, queued_);
  };
  // httplib reads these only for its Keep-Alive response header; the loop below enforces them.
  set_keep_alive_max_count(limits.keepAliveMaxCount);
  set_keep_alive_timeout(std::max<time_t>(1, static_cast<time_t>(limits.keepAlive.count() / 1000)));
  set_payload_max_length(64 * 1024);
  // httplib writes the headers and the body in two sends: without TCP_NODELAY, Nagle holds the
  // body of every keep-alive response until the client's delayed ACK (about 40 ms).
  set_tcp_nodelay(true);
}

void HttpServer::closeAfterResponse() noexcept { t_closeAfter = true; }

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (t_refuse) {
    refuse(sock);
    return false;
  }
  Connection connection(sock, limits_, queued_);
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
