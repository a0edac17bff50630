// mothership_server: the demo HTTP server. Flags and startup, signals, and the httplib wiring;
// the routes are in routes.cpp, the SQL in queries.cpp.

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <streamlock/client.h>
#include <streamlock/error.h>
#include <streamlock/version.h>

#include "config.h"
#include "http/http_server.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "routes.h"
#include "schema.h"
#include "startup.h"

namespace {

using mothership::ServerConfig;

constexpr const char* kProgram = "mothership_server";

using streamlock::LogLevel;

// A line "mothership_server: <message>" in text, {"event":...,"message":...} in JSON.
void say(LogLevel level, const char* event, const std::string& message, examples::LogFields fields = {}) {
  if (!fields.is_object()) fields = examples::LogFields::object();
  fields["message"] = message;
  examples::logLine(level, event, fmt::format("{}: {}", kProgram, message), fields);
}

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
  options.postgres.pipelineDepth = config.pgPipelineDepth;
  options.postgres.statementTimeout = config.pgTimeout;
  options.lock.ttl = config.lockTtl;
  options.logger = examples::logFromLibrary;
  // Completions run inline, on the library's I/O thread, which the library's rule for executors
  // (queue only, never run inline) allows for a host whose completions never block and never make
  // a blocking call. The server's do neither (routes.cpp: they compute, call completion forms, and
  // deliver the reply to the HTTP event loop, which logs). So "rows -> lookup and repair -> JSON"
  // runs without a hop between threads, and the event loop is woken once for all the replies
  // delivered meanwhile.
  options.executor = [](std::function<void()> task) { task(); };
  return options;
}

// Connection handling that slow, idle or flooding clients cannot exhaust (http_server.h): at most
// --max-connections open, past which the longest idle one is closed, else the new one gets 503.
mothership::HttpLimits httpLimits(const ServerConfig& config) {
  mothership::HttpLimits limits;
  limits.maxConnections = config.maxConnections;
  return limits;
}

// RFC 9112 section 6.3: every Content-Length valid and equal, and none beside a Transfer-Encoding.
// Anything else is answered 400 (and its connection closed), whatever the route, as is a header
// line that httplib would misread (HttpServer::malformedHead).
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
  // A route that answers later (http/responder.h) has httplib run the request again once its answer
  // is delivered: that second run only fills the Response with it.
  server.set_pre_routing_handler([&router, &server](const httplib::Request& req, httplib::Response& res) {
    const bool hasBody = req.has_header("Transfer-Encoding") ||
                         (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
    if (const auto* answer = server.deliveredAnswer()) {
      (*answer)(res);
    } else if (!unambiguousFraming(req) || server.malformedHead()) {
      res.status = 400;
      router.completeLibraryError(req, res);
    } else {
      router.handle(req, res, server);
    }
    if (hasBody || res.status == 400) {
      res.set_header("Connection", "close");
      server.closeAfterResponse();
    }
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib's own errors (a malformed request line or header, a request line over 8 KiB) get a
  // JSON body; the connection closes after them, since the rest of the request was not read.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [&router, &server](const httplib::Request& req, httplib::Response& res) {
        if (!router.completeLibraryError(req, res)) return httplib::Server::HandlerResponse::Unhandled;
        res.set_header("Connection", "close");
        server.closeAfterResponse();
        return httplib::Server::HandlerResponse::Handled;
      }));
}

// Binds the listening socket; the bound port (useful with port 0), or -1 with why it failed.
// httplib sets SO_REUSEPORT, with which a second server binds an address in use and the kernel
// splits the connections between the two: only SO_REUSEADDR here (a restart may bind while old
// connections linger in TIME_WAIT), so that an address in use is refused.
int bindListener(mothership::HttpServer& server, const ServerConfig& config, std::string& why) {
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  errno = 0;
  const int port = config.port == 0 ? server.bind_to_any_port(config.host)
                                    : (server.bind_to_port(config.host, config.port) ? config.port : -1);
  if (port < 0) {
    // errno is that of the failed bind() or listen(): httplib only closes the socket after it.
    const int error = errno;
    why = error == EADDRINUSE ? "address already in use" : error != 0 ? std::strerror(error) : "bind failed";
  } else {
    server.widenListenBacklog();
  }
  return port;
}

std::string hostPort(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos;
  return fmt::format("{}{}{}:{}", ipv6 ? "[" : "", host, ipv6 ? "]" : "", port);
}

}  // namespace

int main(int argc, char** argv) {
  const auto parsed = mothership::parseFlags(argc, argv, environment);
  if (std::holds_alternative<mothership::ShowHelp>(parsed)) {
    std::fputs(mothership::usage().c_str(), stdout);
    return 0;
  }
  if (std::holds_alternative<mothership::ShowVersion>(parsed)) {
    fmt::print("{} {}\n", kProgram, STREAMLOCK_VERSION_STRING);
    return 0;
  }
  if (const auto* error = std::get_if<mothership::FlagError>(&parsed)) {
    examples::setLogFormat(error->logFormat);
    say(LogLevel::Error, "bad_flag", error->message + " (see --help)");
    return 2;
  }
  const auto& config = std::get<ServerConfig>(parsed);
  examples::setLogFormat(config.logFormat);

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
    say(LogLevel::Error, "bad_option", error.what());
    return 2;
  }

  // The address first: a second server on a port in use is refused at once, before any database work.
  mothership::Metrics metrics;
  const mothership::Router router(*client, metrics);
  mothership::HttpServer server(httpLimits(config));
  configureHttp(server, router);
  std::string bindError;
  const int port = bindListener(server, config, bindError);
  if (port < 0) {
    const auto address = hostPort(config.host, config.port);
    say(LogLevel::Error, "listen_failed", fmt::format("cannot listen on {}: {}", address, bindError),
        {{"address", address}, {"reason", bindError}});
    return 1;
  }

  try {
    mothership::applySchema(*client->postgres());
    if (config.seedDemo) {  // text format only (parseFlags): the token is printed, never logged
      const auto seed = mothership::seedDemo(*client->postgres());
      fmt::print("demo user: {}\ndemo workspace: {}\n", seed.userId, seed.workspaceId);
      for (const auto& chatId : seed.chatIds) fmt::print("demo chat: {}\n", chatId);
      fmt::print("demo token: {}\n", seed.token);
      std::fflush(stdout);
    }
    mothership::reportServices(*client);
  } catch (const streamlock::Error& error) {
    say(LogLevel::Error, "database_unavailable", fmt::format("cannot use the database: {}", error.what()));
    return 1;
  }

  const auto url = "http://" + hostPort(config.host, port);
  examples::logLine(LogLevel::Info, "listening", "listening on " + url, {{"url", url}}, examples::LogStream::Stdout);

  std::atomic<bool> listenReturned{false};
  std::atomic<bool> signalled{false};
  std::thread stopper([&] {
    int signal = 0;
    sigwait(&stopSignals, &signal);
    if (listenReturned) return;  // woken by main to exit
    signalled = true;
    const char* name = signal == SIGINT ? "SIGINT" : "SIGTERM";
    say(LogLevel::Info, "stopping", fmt::format("{} received, finishing in-flight requests", name),
        {{"signal", name}});
    server.stop();  // also before serve() starts: it then returns at once
  });

  const bool listened = server.serve();  // returns after stop(), once in-flight requests end
  listenReturned = true;
  if (!signalled) pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  client->shutdown();
  say(LogLevel::Info, "stopped", "stopped");
  return listened ? 0 : 1;
}
