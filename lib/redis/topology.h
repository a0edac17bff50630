#pragma once

// Where Redis commands go: one server (standalone), the master the sentinels name (sentinel), or
// the master of each key's slot (cluster). The Client speaks to a topology only, in two calls:
// execute() for keyed commands (the lock's SET, scripts, WAIT) and lookup() for the batched read.
//
// Loop thread only.

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/clock.h"
#include "io/loop.h"
#include "io/stream.h"
#include "redis/connection.h"
#include "redis/resp.h"
#include "redis/url.h"
#include "streamlock/completion.h"
#include "streamlock/log.h"
#include "streamlock/options.h"

namespace streamlock::detail {

// One command about one key: the key picks the node in a cluster.
struct KeyedCommand {
  std::string key;
  std::string resp;  // exactly one command, RESP-encoded
};

// What one command got.
struct CommandOutcome {
  Reply reply;                 // when !error: its reply (an error reply that is not a redirect stays one)
  std::optional<Error> error;  // its connection failed, or it was still redirected at the deadline
  bool written = false;        // it reached a socket, so it may have run
};

// A lookup's answer: owners[i] the value of the i-th key (empty: none), verified only when every
// key was answered.
struct LookupReply {
  Result<std::vector<std::string>> owners{std::vector<std::string>{}};
  std::size_t roundTrips = 0;  // pipelines written (one per node asked, plus redirects)
};

class RedisTopology {
 public:
  virtual ~RedisTopology() = default;

  // Sends every command to its key's node, one pipeline per node, all nodes at once, following
  // redirects (cluster) until deadline; done runs once with one outcome per command, in order.
  // Commands for the same key keep their order (and their connection) across calls.
  virtual void execute(std::vector<KeyedCommand> commands, Deadline deadline,
                       std::function<void(std::vector<CommandOutcome>)> done) = 0;

  // The values of the keys prefix + *ids[i]: MGETs of at most chunk keys (standalone, sentinel), or
  // one pipeline of GETs per node (cluster), all under deadline. done runs once.
  virtual void lookup(const std::string& prefix, const std::vector<const std::string*>& ids, std::size_t chunk,
                      Deadline deadline, std::function<void(LookupReply)> done) = 0;

  // PING every master (one, or every master of a cluster); done gets the first failure, if any.
  virtual void ping(Deadline deadline, std::function<void(std::optional<Error>)> done) = 0;

  // An operation timed out: the server may be gone. Sentinel drops the master and discovers again;
  // a cluster reloads its slot map; a standalone server keeps its connection (commands queued
  // after a hung one must stay in order behind it). Sentinel fails the dropped master's commands
  // inside the call, before anything queued this iteration is written (a cleanup queued behind a
  // hung SET then goes out on the new connection, after the SET): a caller reports its own outcome
  // first. Deferring the drop to the end of the iteration was tried: the cleanup was then written
  // into the hung socket and its answer lost.
  virtual void suspect() {}

  // Called whenever a connection to a master opens, before what was queued on it is written.
  virtual void onMasterConnected(std::function<void()> hook) = 0;

  // Fails everything in flight with error and closes every connection (shutdown).
  virtual void close(const Error& error) = 0;
  // fork() child: forgets every connection without sending a byte.
  virtual void closeSilently() noexcept = 0;
};

struct TopologySettings {
  RedisUrl url;
  std::shared_ptr<TlsContext> tls;  // the rediss forms
  RedisOptions options;
  Logger logger;
  std::shared_ptr<RedisGauges> gauges;  // of the masters' connections (Client::metrics())
};

std::unique_ptr<RedisTopology> makeTopology(Loop& loop, TopologySettings settings);

// Connection settings for one server of a topology.
RedisServerSettings serverSettings(const TopologySettings& settings, const std::string& host, int port, int db);

// Reads a lookup's MGET replies (one per slice of the sink, in order) into the sink's owners, where
// the connection put their values as it parsed them. Throws Error for an error reply or a
// malformed one.
void readMgetReplies(const std::vector<Reply>& replies, const MgetSink& sink);

}  // namespace streamlock::detail
