#pragma once

// How a route answers after its handler has returned (http_server.h implements it for the request
// being handled). The event loop must never wait, so a route that needs the database, Redis or a
// blocking call asks for later(), returns at once, and delivers its answer when it has it.

#include <functional>

namespace httplib {
struct Response;
}  // namespace httplib

namespace mothership {

// Writes one request's answer into httplib's Response; run on the event loop's thread.
using Fill = std::function<void(httplib::Response&)>;

// Delivers one request's answer: called once, from any thread, without blocking.
using Deliver = std::function<void(Fill)>;

class Responder {
 public:
  // The request being handled is answered later, through the returned function: what the handler
  // put into its Response is dropped.
  virtual Deliver later() = 0;

  // Runs task(false) on a thread that may block (a few of them, with a bounded queue). When the
  // queue is full, runs task(true) at once on the calling thread instead, which must then answer
  // without blocking.
  virtual void blocking(std::function<void(bool refused)> task) = 0;

 protected:
  ~Responder() = default;
};

}  // namespace mothership
