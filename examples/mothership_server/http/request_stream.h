#pragma once

// One request as httplib reads and writes it: its head (request line and headers), already whole
// in memory, and the response written into a string that the event loop sends (http_server.h).
//
// - Range header lines are left out of what httplib sees, which would otherwise honour any number
//   of ranges (a few KB of "bytes=0-,0-,..." turn a page into megabytes). Earns: the hostile test
//   of Range headers.
// - The body is never offered: reading past the head is the end of input. No route reads a body
//   (main.cpp's pre-routing handler answers before httplib would), and a connection whose request
//   had one closes after the response.

#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>

#include <httplib.h>

namespace mothership {

// A peer or local address, as httplib asks for it on every request: looked up once per connection.
struct Address {
  std::string ip;
  int port = 0;
};

class RequestStream final : public httplib::Stream {
 public:
  // head: the request's bytes up to and including the empty line that ends its headers. out: where
  // the response goes. Both, and the addresses, outlive the stream. httplib reads the head with its
  // Range lines left out, and with each '%' of a header line as "%25", which httplib's decoding of
  // header values turns back into '%': a header value is what the client sent.
  RequestStream(int sock, std::string_view head, std::string& out, const Address& remote, const Address& local);

  bool is_readable() const override { return pos_ < head_.size(); }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return sock_; }

 private:
  const int sock_;
  std::string filtered_;  // the head without its Range lines and with '%' of header lines as "%25", when needed
  std::string_view head_;
  std::size_t pos_ = 0;
  std::string& out_;
  const Address& remote_;
  const Address& local_;
};

// The head that httplib needs to write the response to head a second time (http_server.h runs a
// request that is answered later again, once its answer is delivered): the request line with "/"
// as its target, and only the header lines that change what httplib writes or whether the
// connection stays open (Connection, Accept-Encoding, Expect, Content-Length, Transfer-Encoding),
// in their order. Earns: httplib reads a head a byte at a time, and the second run of a whole one
// cost about as much as the first, a fifth of a chat request's instructions in the server.
std::string answerHead(std::string_view head);

// Where a request head ends, read incrementally as its bytes arrive, as httplib 0.11.4 reads it: the
// request line, then header lines up to the first "\r\n" (lines ending in a bare "\n" are skipped);
// a request line without its "\r" is the whole head (httplib answers it 400 before any header).
class HeadScanner {
 public:
  // The length of the head at the start of bytes, or 0 while it is incomplete. bytes only grows
  // between calls, until reset().
  std::size_t scan(std::string_view bytes);
  void reset() { *this = HeadScanner(); }
  // Whether a header line of the head scanned is one that httplib would misread rather than
  // refuse: a line ending in a bare "\n" (httplib skips it), a field name that is not an RFC 9110
  // token (whitespace before the colon: httplib keeps "Content-Length " as another header), or a
  // line without a colon. Any of them could hide a Content-Length, so that a body would be read as
  // the next request; RFC 9112 section 5.1 asks for 400.
  bool malformed() const noexcept { return malformed_; }

 private:
  std::size_t scanned_ = 0;  // bytes before this are whole lines, already looked at
  std::size_t lines_ = 0;
  bool malformed_ = false;
};

// The address that getpeername or getsockname gives for sock.
Address addressOf(int sock, int (*get)(int, sockaddr*, socklen_t*));

}  // namespace mothership
