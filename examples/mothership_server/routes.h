#pragma once

// The HTTP routes. Paths are matched by hand (no std::regex over untrusted input), each route's
// handler is a short function, and every request is counted and logged by its route template.

#include <string_view>

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace streamlock {
class Client;
}

namespace mothership {

class Metrics;

class Router {
 public:
  Router(streamlock::Client& client, Metrics& metrics) : client_(client), metrics_(metrics) {}

  // Answers one request completely. Never throws. Thread-safe.
  void handle(const httplib::Request& request, httplib::Response& response) const;

  // Completes an error response that httplib produced itself: routes a request with a body (which
  // httplib read and found no handler for), or gives a JSON body to a malformed request or a body
  // too large; counts and logs it. Returns false when the response is already ours.
  bool completeLibraryError(const httplib::Request& request, httplib::Response& response) const;

 private:
  streamlock::Client& client_;
  Metrics& metrics_;
};

}  // namespace mothership
