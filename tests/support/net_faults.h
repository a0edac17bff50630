#pragma once

// Network faults that a real server cannot produce on demand: a host that accepts TCP and never
// answers, and a connection that dies silently while idle.

#include <atomic>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

namespace streamlock::test {

// A TCP listener on 127.0.0.1 that a client sees as a hung server: the kernel completes the
// handshake, and nothing is ever written. Backlog: connections stay in the kernel's accept queue.
// Accept: a thread accepts them (counted) and holds them open, never reading or writing.
class SilentListener {
 public:
  enum class Mode { Backlog, Accept };
  explicit SilentListener(Mode mode = Mode::Backlog);  // throws std::runtime_error when it cannot listen
  ~SilentListener();
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  int port() const noexcept { return port_; }
  // Connections accepted so far (Mode::Accept).
  std::size_t accepted() const noexcept { return accepted_.load(); }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> accepted_{0};
  std::thread acceptor_;
};

// A TCP proxy on 127.0.0.1 in front of 127.0.0.1:upstreamPort, one thread. cutSilently() plays a
// NAT or firewall that forgot the connections: the server side is closed at once (its session
// ends), the client side only when the client next sends something, so a client that watches an
// idle connection sees nothing until it uses it.
class FaultProxy {
 public:
  explicit FaultProxy(int upstreamPort);  // throws std::runtime_error
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const noexcept { return port_; }
  // Connections accepted so far.
  std::size_t accepted() const noexcept { return accepted_.load(); }
  // Cuts every connection open now (see above). Later connections are proxied normally.
  void cutSilently();

 private:
  struct Pair {
    int client = -1;
    int upstream = -1;  // -1 once cut
  };
  void run();
  void wake();

  const int upstreamPort_;
  int listener_ = -1;
  int port_ = 0;
  int wakeRead_ = -1;
  int wakeWrite_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> accepted_{0};
  std::mutex mutex_;
  std::vector<Pair> pairs_;
  std::thread thread_;
};

}  // namespace streamlock::test
