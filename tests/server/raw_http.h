#pragma once
// Raw HTTP for the server tests: requests sent as exact bytes over a plain socket, so that no
// client library normalises them, and the server's answers split into responses.

#include <chrono>
#include <string>
#include <vector>

namespace servertest {

// A blocking TCP connection to 127.0.0.1:port; throws when it fails.
int connectTo(int port);

struct Answer {
  int status = 0;        // of the first final response; 0: none (the connection closed or timed out)
  int responses = 0;     // final (non-1xx) responses in the byte stream
  bool closed = false;   // the server closed the connection (EOF or reset) before the deadline
  bool reset = false;    // ... with a reset
  std::string head;      // status line and headers of the first final response
  std::string body;
  std::vector<int> statuses;        // of every final response, in order
  std::vector<std::string> bodies;  // their bodies
  std::string raw;
};

// Sends `bytes` on a new connection (as far as the server lets it: a server closing early is an
// answer too) and reads until the server closes the connection or `limit` passes. Never blocks
// past `limit`.
Answer exchange(int port, const std::string& bytes, std::chrono::milliseconds limit = std::chrono::seconds{10});

// Reads fd until the server closes it or `limit` passes, and splits what came into responses.
Answer readUntilClosed(int fd, std::chrono::milliseconds limit = std::chrono::seconds{10});

// Splits answer.raw into its responses (the fields above).
void splitResponses(Answer& answer);

// A request with Host and "Connection: close", then `headers` (whole lines), then `body`.
std::string request(const std::string& method, const std::string& target, const std::string& headers = {},
                    const std::string& body = {}, const std::string& version = "HTTP/1.1");
std::string get(const std::string& target, const std::string& headers = {});
std::string bearer(const std::string& token);  // an Authorization line

// Whether the server closed `fd` (EOF or reset, after any answer) by `deadline`.
bool closedByServer(int fd, std::chrono::steady_clock::time_point deadline);

}  // namespace servertest
