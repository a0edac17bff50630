#include "raw_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace servertest {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int connectTo(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    throw std::runtime_error(std::string("connect failed: ") + std::strerror(errno));
  }
  return fd;
}

Answer exchange(int port, const std::string& bytes, milliseconds limit) {
  Answer answer;
  const int fd = connectTo(port);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  const auto deadline = Clock::now() + limit;
  std::size_t sent = 0;
  bool sending = true;
  while (Clock::now() < deadline) {
    pollfd entry{fd, static_cast<short>(POLLIN | (sending ? POLLOUT : 0)), 0};
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (poll(&entry, 1, static_cast<int>(std::max<long>(1, left.count()))) <= 0) continue;
    if ((entry.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char chunk[65536];
      const auto n = recv(fd, chunk, sizeof chunk, 0);
      if (n > 0) {
        answer.raw.append(chunk, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        answer.closed = true;  // EOF, or a reset
        answer.reset = n < 0 && errno == ECONNRESET;
        break;
      }
    }
    if (sending && (entry.revents & POLLOUT) != 0) {
      const auto n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<std::size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == bytes.size()) sending = false;
    }
  }
  close(fd);
  splitResponses(answer);
  return answer;
}

Answer readUntilClosed(int fd, milliseconds limit) {
  Answer answer;
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    pollfd entry{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (poll(&entry, 1, static_cast<int>(std::max<long>(1, left.count()))) <= 0) continue;
    char chunk[65536];
    const auto n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      answer.raw.append(chunk, static_cast<std::size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      answer.closed = true;
      answer.reset = n < 0 && errno == ECONNRESET;
      break;
    }
  }
  splitResponses(answer);
  return answer;
}

void splitResponses(Answer& answer) {
  // Interim 1xx responses (100 Continue) are skipped; the first final one is the answer.
  std::size_t at = 0;
  while (at < answer.raw.size()) {
    const auto end = answer.raw.find("\r\n\r\n", at);
    if (answer.raw.compare(at, 9, "HTTP/1.1 ") != 0 && answer.raw.compare(at, 9, "HTTP/1.0 ") != 0) break;
    if (end == std::string::npos) break;
    const int status = std::atoi(answer.raw.c_str() + at + 9);
    const auto head = answer.raw.substr(at, end - at);
    std::size_t length = 0;
    for (const auto* name : {"\r\nContent-Length: ", "\r\ncontent-length: "}) {
      if (const auto p = head.find(name); p != std::string::npos) length = std::stoul(head.substr(p + 18));
    }
    at = end + 4;
    if (status >= 200) {
      if (++answer.responses == 1) {
        answer.status = status;
        answer.head = head;
        answer.body = answer.raw.substr(at, length);
      }
      answer.statuses.push_back(status);
      answer.bodies.push_back(answer.raw.substr(at, length));
      at += length;
    }
  }
}

std::string request(const std::string& method, const std::string& target, const std::string& headers,
                    const std::string& body, const std::string& version) {
  return method + " " + target + " " + version + "\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers +
         "\r\n" + body;
}

std::string get(const std::string& target, const std::string& headers) { return request("GET", target, headers); }

std::string bearer(const std::string& token) { return "Authorization: Bearer " + token + "\r\n"; }

bool closedByServer(int fd, Clock::time_point deadline) {
  while (Clock::now() < deadline) {
    pollfd entry{fd, POLLIN, 0};
    if (poll(&entry, 1, 50) <= 0) continue;
    char chunk[4096];
    const auto n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
  return false;
}

}  // namespace servertest
