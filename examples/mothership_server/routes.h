#pragma once

// The HTTP routes. Paths are matched by hand (no std::regex over untrusted input), each route's
// handler is a short function, and every request is counted and logged by its route template.

#include <string_view>

#include "http/responder.h"

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

  // Answers one request: into response before it returns, or later through responder (the routes
  // that need the database, Redis or a blocking call). Never throws, never blocks.
  void handle(const httplib::Request& request, httplib::Response& response, Responder& responder) const;

  // Completes an error response that httplib produced itself: gives a JSON body to a malformed
  // request (400, 413, 414); counts and logs it. Returns false when the response is already ours.
  bool completeLibraryError(const httplib::Request& request, httplib::Response& response) const;

 private:
  streamlock::Client& client_;
  Metrics& metrics_;
};

}  // namespace mothership
