// One Redis server: every caller's commands pipelined on one connection.
#include "redis/standalone.h"

#include <algorithm>
#include <hiredis/hiredis.h>

#include "redis/cluster.h"
#include "redis/sentinel.h"

namespace streamlock::detail {

RedisServerSettings serverSettings(const TopologySettings& settings, const std::string& host, int port, int db) {
  RedisServerSettings out;
  out.host = host;
  out.port = port;
  out.user = settings.url.user;
  out.password = settings.url.password;
  out.db = db;
  out.tls = settings.tls;
  out.connectTimeout = settings.options.connectTimeout;
  out.gauges = settings.gauges;
  out.logger = settings.logger;
  return out;
}

void readMgetReplies(const std::vector<Reply>& replies, const MgetSink& sink) {
  for (std::size_t c = 0; c < replies.size(); ++c) {
    const MgetSink::Slice slice = sink.slice(c);
    readMgetReply(replies[c].get(), slice.count, slice.owners);
  }
}

void executeOn(RedisConnection& connection, std::vector<KeyedCommand> commands,
               std::function<void(std::vector<CommandOutcome>)> done) {
  std::string resp;
  for (const auto& command : commands) resp += command.resp;
  const std::size_t count = commands.size();
  connection.send(resp, count, [count, done = std::move(done)](RedisOutcome outcome) {
    std::vector<CommandOutcome> outcomes(count);
    for (std::size_t i = 0; i < count; ++i) {
      if (outcome.error) {
        outcomes[i].error = outcome.error;
        outcomes[i].written = outcome.written;
      } else {
        outcomes[i].reply = std::move(outcome.replies[i]);
        outcomes[i].written = true;
      }
    }
    done(std::move(outcomes));
  });
}

void lookupOn(RedisConnection& connection, const std::string& prefix, const std::vector<const std::string*>& ids,
              std::size_t chunk, std::function<void(LookupReply)> done) {
  if (chunk == 0) chunk = 1;
  // The values are read straight into the owners as the replies are parsed.
  const MgetSink sink{std::make_shared<std::vector<std::string>>(ids.size()), chunk};
  connection.send([&](std::string& out) { appendMgets(out, prefix, ids, chunk); }, (ids.size() + chunk - 1) / chunk,
                  [sink, done = std::move(done)](RedisOutcome outcome) {
                    LookupReply reply;
                    reply.roundTrips = 1;
                    if (outcome.error) {
                      reply.owners = *outcome.error;
                      return done(std::move(reply));
                    }
                    try {
                      readMgetReplies(outcome.replies, sink);
                      reply.owners = std::move(*sink.owners);
                    } catch (const Error& e) {
                      reply.owners = e;
                    }
                    done(std::move(reply));
                  },
                  sink);
}

void pingOn(RedisConnection& connection, std::function<void(std::optional<Error>)> done) {
  std::string resp;
  appendCommand(resp, {"PING"});
  connection.send(resp, 1, [done = std::move(done)](RedisOutcome outcome) {
    if (outcome.error) return done(outcome.error);
    const ReplyValue* reply = outcome.replies.front().get();
    if (isErrorReply(reply)) return done(Error(ErrorCode::ServerError, "Redis error: " + std::string(replyText(reply))));
    done(std::nullopt);
  });
}

namespace {

class StandaloneTopology final : public RedisTopology {
 public:
  StandaloneTopology(Loop& loop, const TopologySettings& settings)
      : connection_(loop, serverSettings(settings, settings.url.host, settings.url.port, settings.url.db)) {}

  void execute(std::vector<KeyedCommand> commands, Deadline, std::function<void(std::vector<CommandOutcome>)> done) override {
    executeOn(connection_, std::move(commands), std::move(done));
  }
  void lookup(const std::string& prefix, const std::vector<const std::string*>& ids, std::size_t chunk, Deadline,
              std::function<void(LookupReply)> done) override {
    lookupOn(connection_, prefix, ids, chunk, std::move(done));
  }
  void ping(Deadline, std::function<void(std::optional<Error>)> done) override { pingOn(connection_, std::move(done)); }
  void onMasterConnected(std::function<void()> hook) override { connection_.onOpen(std::move(hook)); }
  void close(const Error& error) override { connection_.close(error); }
  void closeSilently() noexcept override { connection_.closeSilently(); }

 private:
  RedisConnection connection_;
};

}  // namespace

std::unique_ptr<RedisTopology> makeTopology(Loop& loop, TopologySettings settings) {
  switch (settings.url.kind) {
    case RedisTopologyKind::Standalone: return std::make_unique<StandaloneTopology>(loop, settings);
    case RedisTopologyKind::Sentinel: return makeSentinelTopology(loop, std::move(settings));
    case RedisTopologyKind::Cluster: return makeClusterTopology(loop, std::move(settings));
  }
  return nullptr;
}

}  // namespace streamlock::detail
