#pragma once

// The guarded connection stream: one client connection as httplib reads and writes it.
//
// - Deadlines and a byte budget per request: each request (line, headers and any body read) must
//   arrive within requestTimeout of its first byte and be at most maxRequestBytes; while other
//   connections queue for a thread, requestTimeoutUnderPressure with at most stallUnderPressure of
//   silence. httplib alone bounds only each recv(), so a client trickling one byte every few
//   seconds would keep its thread for ever, and grows a line without limit until its '\n'.
//   Earns: the hostile tests (stalling and trickling clients, 100 KB queries, oversized headers).
// - Range header lines are left out of what httplib sees, which would otherwise honour any number
//   of ranges (a few KB of "bytes=0-,0-,..." turn a page into megabytes). Earns: the hostile test
//   of Range headers.
// - Few system calls: the next request is awaited with one blocking recv() (the socket's receive
//   timeout slices the wait, so that the idle patience and a stopping server are noticed), a
//   response leaves in one sendmsg() (httplib's status line and headers are buffered and sent with
//   the body, which is not copied), and the peer and local addresses that httplib asks for on every
//   request are looked up once per connection. Earns: two system calls per keep-alive request
//   (recv, sendmsg; strace -c -f with one client), where poll-then-recv made three and httplib's own
//   loop about nine (bench/load/tuning.md).

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <httplib.h>

#include "http/limits.h"

namespace mothership {

class GuardedStream final : public httplib::Stream {
 public:
  // waiting: the connections that wait for a thread (task_queue.h), the pressure.
  GuardedStream(int sock, const HttpLimits& limits, const std::atomic<std::size_t>& waiting);

  // Waits for the first bytes of the next request: true when there are some (or the peer closed,
  // which the next read reports). False when the connection idled out, failed, or the server
  // stops (listening becomes INVALID_SOCKET).
  bool awaitRequest(const std::atomic<int>& listening);

  // A new request starts: its deadline and budget.
  void startRequest();

  // A read hit the deadline, the budget or an error: the connection is not reused.
  bool broken() const { return broken_; }

  // Sends what write() buffered. False when the bytes could not all be sent.
  bool flush();

  // httplib::Stream
  bool is_readable() const override;
  // Always writable until a send failed (writes are buffered, see write()).
  bool is_writable() const override { return !writeFailed_; }
  ssize_t read(char* ptr, size_t size) override;
  // Small writes (httplib's status line and headers) are buffered; the next large one (a body)
  // leaves together with them in one sendmsg, and flush() sends the rest after each request.
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return sock_; }

 private:
  bool underPressure() const { return waiting_.load() > 0; }
  bool sendAll(std::string_view first, std::string_view second);
  ssize_t readHead(char* ptr, size_t size);
  ssize_t deliver(char* ptr, size_t n);
  bool fill();
  enum class Received { Bytes, Nothing, End };
  Received receive(bool wait);
  bool fail();

  const int sock_;
  const HttpLimits& limits_;
  const std::atomic<std::size_t>& waiting_;
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
  std::chrono::steady_clock::time_point started_{};
  std::chrono::steady_clock::time_point deadline_{};
  std::chrono::steady_clock::time_point lastProgress_{};
};

}  // namespace mothership
