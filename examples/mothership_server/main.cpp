// mothership_server: the demo HTTP server. Flags and startup, signals, and the httplib wiring;
// the routes are in routes.cpp, the SQL in queries.cpp.

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <streamlock/client.h>
#include <streamlock/error.h>

#include "config.h"
#include "http_server.h"
#include "metrics.h"
#include "request.h"
#include "routes.h"
#include "schema.h"

namespace {

using mothership::ServerConfig;

constexpr const char* kProgram = "mothership_server";

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

streamlock::Options clientOptions(const ServerConfig& config) {
  streamlock::Options options;
  options.redis.url = config.redisUrl;
  options.redis.tls.caFile = config.redisTlsCa;
  options.redis.tls.certFile = config.redisTlsCert;
  options.redis.tls.keyFile = config.redisTlsKey;
  options.redis.lookupDeadline = config.redisTimeout;
  options.redis.connectTimeout = config.redisTimeout;
  options.postgres.conninfo = config.databaseUrl;
  options.postgres.poolSize = config.pgPoolSize;
  options.postgres.statementTimeout = config.pgTimeout;
  options.lock.ttl = config.lockTtl;
  return options;
}

// Connection handling that slow, idle, flooding or queueing clients cannot exhaust (http_server.h):
// at most `threads` connections are served at once, the next ones queue (up to 4 per thread, at
// least 256; beyond that 503), and idle ones give their thread up as soon as others queue.
mothership::HttpLimits httpLimits(const ServerConfig& config) {
  mothership::HttpLimits limits;
  limits.threads = config.threads;
  limits.maxQueued = config.threads * 4 < 256 ? 256 : config.threads * 4;
  return limits;
}

// RFC 9112 section 6.3: every Content-Length valid and equal, and none beside a Transfer-Encoding.
// Anything else is answered 400 (and its connection closed), whatever the route.
// (Values from the header map itself: get_header_value() would cut them at a NUL byte.)
bool unambiguousFraming(const httplib::Request& req) {
  const auto [first, last] = req.headers.equal_range("Content-Length");
  if (first != last && req.has_header("Transfer-Encoding")) return false;
  for (auto it = first; it != last; ++it) {
    if (!mothership::isValidContentLength(it->second) || it->second != first->second) return false;
  }
  return true;
}

void configureHttp(mothership::HttpServer& server, const mothership::Router& router) {
  // Every request is routed here, by hand, and httplib never reads a body: a request with one
  // (none of the routes takes one) is answered like any other (404, 405, or the GET route) and
  // its connection closed after the response, so that its unread body is never taken for the next
  // request. httplib thus never parses a body (multipart, chunked) at all.
  server.set_pre_routing_handler([&router](const httplib::Request& req, httplib::Response& res) {
    const bool hasBody = req.has_header("Transfer-Encoding") ||
                         (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
    if (!unambiguousFraming(req)) {
      res.status = 400;
      router.completeLibraryError(req, res);
    } else {
      router.handle(req, res);
    }
    if (hasBody || res.status == 400) {
      res.set_header("Connection", "close");
      mothership::HttpServer::closeAfterResponse();
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib's own errors (a malformed request line or header, a request line over 8 KiB) get a
  // JSON body; the connection closes after them, since the rest of the request was not read.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [&router](const httplib::Request& req, httplib::Response& res) {
        if (!router.completeLibraryError(req, res)) return httplib::Server::HandlerResponse::Unhandled;
        res.set_header("Connection", "close");
        mothership::HttpServer::closeAfterResponse();
        return httplib::Server::HandlerResponse::Handled;
      }));
}

// Binds the listening socket; the bound port (useful with port 0), or -1.
int bind(httplib::Server& server, const ServerConfig& config) {
  if (config.port == 0) return server.bind_to_any_port(config.host);
  return server.bind_to_port(config.host, config.port) ? config.port : -1;
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed = mothership::parseFlags(argc, argv, environment);
  if (std::holds_alternative<mothership::ShowHelp>(parsed)) {
    std::fputs(mothership::usage(), stdout);
    return 0;
  }
  if (const auto* error = std::get_if<mothership::FlagError>(&parsed)) {
    fmt::print(stderr, "{}: {} (see --help)\n", kProgram, error->message);
    return 2;
  }
  const auto& config = std::get<ServerConfig>(parsed);

  // SIGINT and SIGTERM are taken by one thread with sigwait(); block them before any thread starts
  // so that every thread inherits the mask.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGINT);
  sigaddset(&stopSignals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<streamlock::Client> client;
  try {
    client = std::make_unique<streamlock::Client>(clientOptions(config));
  } catch (const streamlock::Error& error) {
    fmt::print(stderr, "{}: {}\n", kProgram, error.what());
    return 2;
  }

  try {
    mothership::applySchema(*client->postgres());
    if (config.seedDemo) {
      const auto seed = mothership::seedDemo(*client->postgres());
      fmt::print("demo user: {}\ndemo workspace: {}\n", seed.userId, seed.workspaceId);
      for (const auto& chatId : seed.chatIds) fmt::print("demo chat: {}\n", chatId);
      fmt::print("demo token: {}\n", seed.token);
    }
  } catch (const streamlock::Error& error) {
    fmt::print(stderr, "{}: cannot use the database: {}\n", kProgram, error.what());
    return 1;
  }

  mothership::Metrics metrics;
  const mothership::Router router(*client, metrics);
  mothership::HttpServer server(httpLimits(config));
  configureHttp(server, router);
  const int port = bind(server, config);
  if (port < 0) {
    fmt::print(stderr, "{}: cannot listen on {}:{}\n", kProgram, config.host, config.port);
    return 1;
  }
  const bool ipv6 = config.host.find(':') != std::string::npos;
  fmt::print("listening on http://{}{}{}:{}\n", ipv6 ? "[" : "", config.host, ipv6 ? "]" : "", port);
  std::fflush(stdout);

  std::atomic<bool> listenReturned{false};
  std::atomic<bool> signalled{false};
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&stopSignals, &signal);
    if (listenReturned) return;  // woken by main to exit
    signalled = true;
    fmt::print(stderr, "{}: {} received, finishing in-flight requests\n", kProgram,
               signal == SIGINT ? "SIGINT" : "SIGTERM");
    // stop() acts only once the accept loop runs; a signal can arrive just before it does.
    while (!server.is_running() && !listenReturned) std::this_thread::sleep_for(std::chrono::milliseconds{10});
    server.stop();
  });

  const bool listened = server.listen_after_bind();  // returns after stop(), once in-flight requests end
  listenReturned = true;
  if (!signalled) pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  client->shutdown();
  fmt::print(stderr, "{}: stopped\n", kProgram);
  return listened ? 0 : 1;
}
