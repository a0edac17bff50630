// Redis Sentinel: discovery, the ROLE check, and following failovers (see sentinel.h).
#include "redis/sentinel.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "redis/standalone.h"

namespace streamlock::detail {
namespace {

constexpr int kMaxDiscoveryRounds = 20;
constexpr std::chrono::milliseconds kRediscoverDelay{100};

class SentinelTopology final : public RedisTopology {
 public:
  SentinelTopology(Loop& loop, TopologySettings settings) : loop_(loop), settings_(std::move(settings)) {}
  ~SentinelTopology() override { *alive_ = false; }

  void execute(std::vector<KeyedCommand> commands, Deadline, std::function<void(std::vector<CommandOutcome>)> done) override {
    const std::size_t count = commands.size();
    withMaster([this, count, commands = std::move(commands), done = std::move(done)](
                   RedisConnection* master, std::optional<Error> error) mutable {
      if (error) {
        std::vector<CommandOutcome> outcomes(count);
        for (auto& outcome : outcomes) outcome.error = error;
        return done(std::move(outcomes));
      }
      const std::uint64_t generation = generation_;
      executeOn(*master, std::move(commands), [this, generation, done = std::move(done)](std::vector<CommandOutcome> outcomes) {
        for (const auto& outcome : outcomes) {
          const bool readOnly = !outcome.error && isErrorReply(outcome.reply.get()) &&
                                replyText(outcome.reply.get()).rfind("READONLY", 0) == 0;
          if (outcome.error || readOnly) {
            dropMaster(generation, readOnly ? "it answered READONLY" : outcome.error->what());
            break;
          }
        }
        done(std::move(outcomes));
      });
    });
  }

  void lookup(const std::string& prefix, const std::vector<const std::string*>& ids, std::size_t chunk, Deadline,
              std::function<void(LookupReply)> done) override {
    // The ids point into the caller's strings, which live only until its deadline: a lookup that
    // waits for a master to be discovered (which may outlast the deadline) keeps copies of them.
    std::shared_ptr<std::vector<std::string>> kept;
    if (!ready_ && !closed_) {
      kept = std::make_shared<std::vector<std::string>>();
      kept->reserve(ids.size());
      for (const std::string* id : ids) kept->push_back(*id);
    }
    withMaster([this, prefix, ids = std::vector<const std::string*>(ids), kept, chunk, done = std::move(done)](RedisConnection* master,
                                                                      std::optional<Error> error) mutable {
      if (error) {
        LookupReply reply;
        reply.owners = *error;
        return done(std::move(reply));
      }
      if (kept) {
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = &(*kept)[i];
      }
      const std::uint64_t generation = generation_;
      lookupOn(*master, prefix, ids, chunk, [this, generation, done = std::move(done)](LookupReply reply) {
        if (!reply.owners) dropMaster(generation, reply.owners.error()->what());
        done(std::move(reply));
      });
    });
  }

  void ping(Deadline, std::function<void(std::optional<Error>)> done) override {
    withMaster([this, done = std::move(done)](RedisConnection* master, std::optional<Error> error) mutable {
      if (error) return done(error);
      const std::uint64_t generation = generation_;
      pingOn(*master, [this, generation, done = std::move(done)](std::optional<Error> failed) {
        if (failed) dropMaster(generation, failed->what());
        done(failed);
      });
    });
  }

  void onMasterConnected(std::function<void()> hook) override { onMasterConnected_ = std::move(hook); }

  void close(const Error& error) override {
    closed_ = true;
    releaseWaiting(nullptr, error);
    if (master_) master_->close(error);
    if (subscriber_) subscriber_->close(error);
    for (auto& sentinel : sentinels_) {
      if (sentinel) sentinel->close(error);
    }
  }

  void closeSilently() noexcept override {
    *alive_ = false;
    if (master_) master_->closeSilently();
    if (subscriber_) subscriber_->closeSilently();
    for (auto& sentinel : sentinels_) {
      if (sentinel) sentinel->closeSilently();
    }
    for (auto& old : retired_) old->closeSilently();
  }

  // A command timed out: drop the master in use. A master still being checked (ROLE in flight) is
  // left alone: its discovery ends by itself, with the answer or the connection's failure.
  void suspect() override {
    if (ready_) dropMaster(generation_, "a command timed out");
  }

 private:
  using Waiter = std::function<void(RedisConnection*, std::optional<Error>)>;

  void withMaster(Waiter then) {
    if (closed_) return then(nullptr, Error(ErrorCode::ShutDown, "the client is shut down"));
    if (ready_) return then(master_.get(), std::nullopt);
    waiting_.push_back(std::move(then));
    if (!discovering_) discover(0);
  }

  void releaseWaiting(RedisConnection* master, const std::optional<Error>& error) {
    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (auto& then : waiting) then(master, error);
  }

  // A connection to sentinel `index`: no AUTH (the URL's credentials are the master's), TLS for
  // the rediss form, a short connect deadline.
  std::unique_ptr<RedisConnection> connectionToSentinel(std::size_t index) {
    const RedisEndpoint& endpoint = settings_.url.endpoints[index];
    RedisServerSettings settings;
    settings.host = endpoint.host;
    settings.port = endpoint.port;
    settings.tls = settings_.tls;
    settings.connectTimeout = sentinelTimeout();
    settings.logger = settings_.logger;
    return std::make_unique<RedisConnection>(loop_, std::move(settings));
  }

  RedisConnection& sentinel(std::size_t index) {
    if (sentinels_.size() < settings_.url.endpoints.size()) sentinels_.resize(settings_.url.endpoints.size());
    auto& connection = sentinels_[index];
    if (!connection) connection = connectionToSentinel(index);
    return *connection;
  }

  std::chrono::milliseconds sentinelTimeout() const {
    return std::min(settings_.options.connectTimeout, std::chrono::milliseconds{500});
  }

  // Asks the sentinels in order, from the first, within discovery round `round`.
  void discover(int round) {
    discovering_ = true;
    askSentinel(0, round, "no sentinel answered");
  }

  void askSentinel(std::size_t index, int round, std::string lastError) {
    if (closed_) return;
    if (index >= settings_.url.endpoints.size()) return retry(round, "no sentinel named master " +
                                                                         settings_.url.masterName + " (" + lastError + ")");
    std::string resp;
    appendCommand(resp, {"SENTINEL", "get-master-addr-by-name", settings_.url.masterName});
    const std::uint64_t token = ++askToken_;
    std::weak_ptr<bool> alive = alive_;
    sentinel(index).send(resp, 1, [this, alive, index, round, token](RedisOutcome outcome) {
      if (alive.expired() || token != askToken_) return;
      loop_.cancel(askTimer_);
      if (outcome.error) {
        sentinels_[index]->close(*outcome.error);
        return askSentinel(index + 1, round, outcome.error->what());
      }
      const ReplyValue* reply = outcome.replies.front().get();
      if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING ||
          reply->element[1]->type != REDIS_REPLY_STRING) {
        return askSentinel(index + 1, round, isErrorReply(reply) ? std::string(replyText(reply)) : "master unknown");
      }
      int port = 0;
      try {
        port = std::stoi(std::string(replyText(reply->element[1])));
      } catch (const std::exception&) {
      }
      if (port <= 0 || port > 65535) return askSentinel(index + 1, round, "a bad master port");
      subscribe(index);
      connectMaster(std::string(replyText(reply->element[0])), port, round);
    });
    askTimer_ = loop_.at(saturatingAdd(Clock::now(), sentinelTimeout()), [this, alive, index, round] {
      if (alive.expired()) return;
      ++askToken_;
      sentinels_[index]->close(Error(ErrorCode::Timeout, "the sentinel did not answer"));
      askSentinel(index + 1, round, "sentinel timed out");
    });
  }

  // Connects to the named master and sends ROLE first: only a master is used.
  void connectMaster(const std::string& host, int port, int round) {
    retire(std::move(master_));
    master_ = std::make_unique<RedisConnection>(loop_, serverSettings(settings_, host, port, settings_.url.db));
    const std::uint64_t generation = ++generation_;
    // Never reconnect to this address: a closed connection (the master died, a restart, a network
    // error) makes the next command ask the sentinels again.
    std::weak_ptr<bool> aliveOnClose = alive_;
    master_->onClose([this, aliveOnClose, generation](const Error& error) {
      if (!aliveOnClose.expired()) dropMaster(generation, error.what());
    });
    std::string resp;
    appendCommand(resp, {"ROLE"});
    std::weak_ptr<bool> alive = alive_;
    master_->send(resp, 1, [this, alive, generation, round, host, port](RedisOutcome outcome) {
      if (alive.expired() || generation != generation_) return;
      if (outcome.error) return retry(round, "master " + host + ":" + std::to_string(port) + ": " + outcome.error->what());
      const ReplyValue* role = outcome.replies.front().get();
      const bool master = role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
                          role->element[0]->type == REDIS_REPLY_STRING && replyText(role->element[0]) == "master";
      if (!master) return retry(round, host + ":" + std::to_string(port) + " is not a master (yet)");
      ready_ = true;
      discovering_ = false;
      // Queued work (an acquire's cleanup first) goes out on the new master, after ROLE.
      if (onMasterConnected_) onMasterConnected_();
      releaseWaiting(master_.get(), std::nullopt);
    });
  }

  // Another discovery round soon, while someone waits; past the last round, they fail.
  void retry(int round, std::string why) {
    retire(std::move(master_));
    ready_ = false;
    if (waiting_.empty() || round + 1 >= kMaxDiscoveryRounds) {
      discovering_ = false;
      releaseWaiting(nullptr, Error(ErrorCode::ConnectFailed, "Redis Sentinel: " + why));
      return;
    }
    std::weak_ptr<bool> alive = alive_;
    loop_.at(saturatingAdd(Clock::now(), kRediscoverDelay), [this, alive, round] {
      if (alive.expired() || closed_) return;
      if (waiting_.empty()) {
        discovering_ = false;
        return;
      }
      discover(round + 1);
    });
  }

  // Forgets the master of `generation` (if still current): its requests fail, the next command
  // asks the sentinels again.
  void dropMaster(std::uint64_t generation, const std::string& why) {
    if (generation != generation_ || !master_ || closed_) return;
    ++generation_;
    const bool interruptedDiscovery = !ready_;
    ready_ = false;
    auto old = std::move(master_);
    old->close(Error(ErrorCode::ConnectionLost, "dropped the Redis master (" + why + "); asking the sentinels again"));
    retire(std::move(old));
    // Its ROLE answer will be ignored now: whoever waited for it needs a new discovery.
    if (interruptedDiscovery && !waiting_.empty()) discover(0);
  }

  // Connections are destroyed after the loop iteration: one may be inside its own handler now.
  void retire(std::unique_ptr<RedisConnection> connection) {
    if (!connection) return;
    retired_.push_back(std::move(connection));
    std::weak_ptr<bool> alive = alive_;
    loop_.atEndOfIteration([this, alive] {
      if (!alive.expired()) retired_.clear();
    });
  }

  // +switch-master on the sentinel that answered: a failover drops the master at once.
  void subscribe(std::size_t index) {
    if (subscriber_) return;
    subscriber_ = connectionToSentinel(index);
    std::weak_ptr<bool> alive = alive_;
    subscriber_->onPush([this, alive](Reply message) {
      if (alive.expired()) return;
      // ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
      const ReplyValue* m = message.get();
      if (m->type != REDIS_REPLY_ARRAY || m->elements != 3) return;
      const std::string_view payload = replyText(m->element[2]);
      if (payload.substr(0, payload.find(' ')) != settings_.url.masterName) return;
      dropMaster(generation_, "the sentinels switched masters");
    });
    std::string resp;
    appendCommand(resp, {"SUBSCRIBE", "+switch-master"});
    subscriber_->send(resp, 1, [this, alive](RedisOutcome outcome) {
      if (alive.expired() || !outcome.error) return;
      // Lost: subscribe again with the next discovery.
      retire(std::move(subscriber_));
    });
  }

  Loop& loop_;
  const TopologySettings settings_;
  std::vector<std::unique_ptr<RedisConnection>> sentinels_;
  std::unique_ptr<RedisConnection> subscriber_;
  std::unique_ptr<RedisConnection> master_;
  std::vector<std::unique_ptr<RedisConnection>> retired_;
  std::uint64_t generation_ = 0;
  bool ready_ = false;
  bool discovering_ = false;
  bool closed_ = false;
  std::uint64_t askToken_ = 0;
  Loop::TimerId askTimer_ = 0;
  std::vector<Waiter> waiting_;
  std::function<void()> onMasterConnected_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::unique_ptr<RedisTopology> makeSentinelTopology(Loop& loop, TopologySettings settings) {
  return std::make_unique<SentinelTopology>(loop, std::move(settings));
}

}  // namespace streamlock::detail
