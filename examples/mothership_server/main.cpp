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
#include "metrics.h"
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
  options.redis.poolSize = config.pgPoolSize;
  options.redis.lookupDeadline = config.redisTimeout;
  options.redis.connectTimeout = config.redisTimeout;
  options.postgres.conninfo = config.databaseUrl;
  options.postgres.poolSize = config.pgPoolSize;
  options.lock.ttl = config.lockTtl;
  return options;
}

void configureHttp(httplib::Server& server, const ServerConfig& config, const mothership::Router& router) {
  // One pooled thread serves one connection until it closes or times out: a pool larger than the
  // number of slow clients, and short read and keep-alive timeouts, keep them from starving others.
  const auto threads = config.threads;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server.set_read_timeout(5, 0);
  server.set_write_timeout(5, 0);
  server.set_keep_alive_timeout(3);
  server.set_keep_alive_max_count(100);
  server.set_payload_max_length(64 * 1024);

  // Every request without a body is routed here, by hand. A request with a body is left to httplib
  // so that it reads the body off the connection; it then reaches the error handler as a 404.
  server.set_pre_routing_handler([&router](const httplib::Request& req, httplib::Response& res) {
    const bool hasBody = req.has_header("Transfer-Encoding") ||
                         (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
    if (hasBody) return httplib::Server::HandlerResponse::Unhandled;
    router.handle(req, res);
    return httplib::Server::HandlerResponse::Handled;
  });
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [&router](const httplib::Request& req, httplib::Response& res) {
        return router.completeLibraryError(req, res) ? httplib::Server::HandlerResponse::Handled
                                                     : httplib::Server::HandlerResponse::Unhandled;
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
  httplib::Server server;
  configureHttp(server, config, router);
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
