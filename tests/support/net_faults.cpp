#include "net_faults.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace streamlock::test {
namespace {

// A socket listening on 127.0.0.1 with an ephemeral port; its port in *port.
int listenOnLoopback(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  // sockaddr_in -> sockaddr is how the socket API is spelled.
  auto* generic = reinterpret_cast<sockaddr*>(&address);
  if (::bind(fd, generic, length) != 0 || ::listen(fd, 64) != 0 || ::getsockname(fd, generic, &length) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot listen on 127.0.0.1");
  }
  *port = ntohs(address.sin_port);
  return fd;
}

int connectToLoopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Copies what `from` has to `to`; false at end of stream or on an error.
bool forward(int from, int to) {
  char buffer[16384];
  const ssize_t got = ::read(from, buffer, sizeof buffer);
  if (got <= 0) return false;
  std::size_t sent = 0;
  while (sent < static_cast<std::size_t>(got)) {
    const ssize_t wrote = ::write(to, buffer + sent, static_cast<std::size_t>(got) - sent);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) return false;
    sent += static_cast<std::size_t>(wrote);
  }
  return true;
}

}  // namespace

SilentListener::SilentListener(Mode mode) {
  fd_ = listenOnLoopback(&port_);
  if (mode == Mode::Backlog) return;
  acceptor_ = std::thread([this] {
    std::vector<int> held;  // accepted and never answered, closed at the end
    while (!stop_) {
      pollfd entry{fd_, POLLIN, 0};
      if (::poll(&entry, 1, 20) <= 0) continue;
      const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      held.push_back(fd);
      ++accepted_;
    }
    for (const int fd : held) ::close(fd);
  });
}

SilentListener::~SilentListener() {
  stop_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  ::close(fd_);
}

FaultProxy::FaultProxy(int upstreamPort) : upstreamPort_(upstreamPort) {
  listener_ = listenOnLoopback(&port_);
  int pipe[2];
  if (::pipe2(pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    ::close(listener_);
    throw std::runtime_error("pipe2() failed");
  }
  wakeRead_ = pipe[0];
  wakeWrite_ = pipe[1];
  thread_ = std::thread([this] { run(); });
}

FaultProxy::~FaultProxy() {
  stopping_ = true;
  wake();
  thread_.join();
  for (const Pair& pair : pairs_) {
    ::close(pair.client);
    if (pair.upstream >= 0) ::close(pair.upstream);
  }
  ::close(listener_);
  ::close(wakeRead_);
  ::close(wakeWrite_);
}

void FaultProxy::wake() {
  const char byte = 1;
  [[maybe_unused]] const ssize_t wrote = ::write(wakeWrite_, &byte, 1);
}

void FaultProxy::cutSilently() {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    for (Pair& pair : pairs_) {
      if (pair.upstream < 0) continue;
      ::close(pair.upstream);
      pair.upstream = -1;
    }
  }
  wake();
}

void FaultProxy::run() {
  while (!stopping_) {
    std::vector<pollfd> fds{{listener_, POLLIN, 0}, {wakeRead_, POLLIN, 0}};
    {
      std::lock_guard<std::mutex> guard(mutex_);
      for (const Pair& pair : pairs_) {
        fds.push_back({pair.client, POLLIN, 0});
        fds.push_back({pair.upstream, POLLIN, 0});  // poll() skips a negative descriptor
      }
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) continue;
    if ((fds[1].revents & POLLIN) != 0) {
      char drain[64];
      while (::read(wakeRead_, drain, sizeof drain) > 0) {
      }
      continue;  // the pairs may have changed: poll them afresh
    }
    std::lock_guard<std::mutex> guard(mutex_);
    for (std::size_t i = 0; i < pairs_.size(); ++i) {
      Pair& pair = pairs_[i];
      const short clientEvents = fds[2 + 2 * i].revents;
      const short upstreamEvents = fds[3 + 2 * i].revents;
      bool alive = true;
      if (clientEvents != 0) {
        // A cut connection: the client's first bytes meet a closed connection.
        alive = pair.upstream >= 0 && forward(pair.client, pair.upstream);
      }
      if (alive && upstreamEvents != 0 && pair.upstream >= 0) alive = forward(pair.upstream, pair.client);
      if (!alive) {
        ::close(pair.client);
        if (pair.upstream >= 0) ::close(pair.upstream);
        pair.client = -1;
        pair.upstream = -1;
      }
    }
    for (auto it = pairs_.begin(); it != pairs_.end();) {
      it = it->client < 0 ? pairs_.erase(it) : it + 1;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) {
        ++accepted_;
        const int upstream = connectToLoopback(upstreamPort_);
        if (upstream < 0) {
          ::close(client);
        } else {
          pairs_.push_back(Pair{client, upstream});
        }
      }
    }
  }
}

}  // namespace streamlock::test
