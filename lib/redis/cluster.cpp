// Redis Cluster: the slot map, per-node pipelines and the redirects (see cluster.h).
#include "redis/cluster.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "redis/standalone.h"

namespace streamlock::detail {
namespace {

constexpr std::size_t kSlots = 16384;
constexpr int kMaxRedirects = 5;
// TRYAGAIN and CLUSTERDOWN are retried until the caller's deadline; this only bounds the callers
// without one (an orphan cleanup retries on its own): about 10 s of 100 ms backoffs.
constexpr int kMaxRetries = 100;
// Where a backoff would reach the deadline, the resends go halfway to it instead, while that leaves
// at least this long for the answer: a resend at the deadline itself could never be answered in
// time, so a slot back shortly before the deadline would be found by none.
constexpr std::chrono::milliseconds kLastResendLead{5};

Deadline resendAt(Deadline now, std::chrono::milliseconds backoff, Deadline deadline) {
  if (now + backoff < deadline) return now + backoff;
  const auto half = (deadline - now) / 2;
  return half >= kLastResendLead ? now + half : deadline;  // at the deadline: given up
}

// CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with.
constexpr std::array<std::uint16_t, 256> crcTable() {
  std::array<std::uint16_t, 256> table{};
  for (unsigned byte = 0; byte < 256; ++byte) {
    unsigned crc = byte << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
    table[byte] = static_cast<std::uint16_t>(crc & 0xffff);
  }
  return table;
}
constexpr auto kCrcTable = crcTable();

std::uint16_t crc16(std::string_view bytes) noexcept {
  unsigned crc = 0;
  for (char c : bytes) crc = ((crc << 8) ^ kCrcTable[((crc >> 8) ^ static_cast<unsigned char>(c)) & 0xff]) & 0xffff;
  return static_cast<std::uint16_t>(crc);
}

// A redirection or a please-retry in an error reply.
struct Redirect {
  enum class Kind { None, Moved, Ask, TryAgain } kind = Kind::None;
  std::uint16_t slot = 0;
  std::string host;
  int port = 0;
};

Redirect redirectOf(const ReplyValue* reply) {
  Redirect out;
  if (!isErrorReply(reply)) return out;
  const std::string_view text = replyText(reply);
  if (text.rfind("TRYAGAIN", 0) == 0 || text.rfind("CLUSTERDOWN", 0) == 0) {
    out.kind = Redirect::Kind::TryAgain;
    return out;
  }
  const bool moved = text.rfind("MOVED ", 0) == 0;
  const bool ask = text.rfind("ASK ", 0) == 0;
  if (!moved && !ask) return out;
  // "MOVED 3999 127.0.0.1:6381"
  const std::string_view rest = text.substr(moved ? 6 : 4);
  const std::size_t space = rest.find(' ');
  if (space == std::string_view::npos) return out;
  const std::string_view address = rest.substr(space + 1);
  const std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) return out;
  try {
    const unsigned long slot = std::stoul(std::string(rest.substr(0, space)));
    const int port = std::stoi(std::string(address.substr(colon + 1)));
    if (slot >= kSlots || port <= 0 || port > 65535) return out;
    out.slot = static_cast<std::uint16_t>(slot);
    out.host = std::string(address.substr(0, colon));
    if (out.host.size() > 2 && out.host.front() == '[' && out.host.back() == ']') {
      out.host = out.host.substr(1, out.host.size() - 2);
    }
    out.port = port;
    out.kind = moved ? Redirect::Kind::Moved : Redirect::Kind::Ask;
  } catch (const std::exception&) {
  }
  return out;
}

class ClusterTopology final : public RedisTopology {
 public:
  ClusterTopology(Loop& loop, TopologySettings settings)
      : loop_(loop), settings_(std::move(settings)), slots_(kSlots, nullptr) {}

  ~ClusterTopology() override { *alive_ = false; }

  void execute(std::vector<KeyedCommand> commands, Deadline deadline,
               std::function<void(std::vector<CommandOutcome>)> done) override {
    run(std::move(commands), deadline,
        [done = std::move(done)](std::vector<CommandOutcome> outcomes, std::size_t) { done(std::move(outcomes)); });
  }

  void lookup(const std::string& prefix, const std::vector<const std::string*>& ids, std::size_t, Deadline deadline,
              std::function<void(LookupReply)> done) override {
    std::vector<KeyedCommand> commands;
    commands.reserve(ids.size());
    for (const std::string* id : ids) {
      KeyedCommand command;
      command.key = prefix + *id;
      appendCommand(command.resp, {"GET", command.key});
      commands.push_back(std::move(command));
    }
    run(std::move(commands), deadline, [done = std::move(done)](std::vector<CommandOutcome> outcomes, std::size_t sends) {
      LookupReply reply;
      reply.roundTrips = sends;
      std::vector<std::string> owners(outcomes.size());
      for (std::size_t i = 0; i < outcomes.size(); ++i) {
        const CommandOutcome& outcome = outcomes[i];
        if (outcome.error) {
          reply.owners = *outcome.error;
          return done(std::move(reply));
        }
        const ReplyValue* value = outcome.reply.get();
        if (value->type == REDIS_REPLY_NIL) continue;
        if (value->type == REDIS_REPLY_STRING) {
          owners[i].assign(value->str, value->len);
          continue;
        }
        try {
          if (isErrorReply(value)) throwReplyError(value);
          throw Error(ErrorCode::ServerError, "GET answered with a value that is not a string");
        } catch (const Error& e) {
          reply.owners = e;
          return done(std::move(reply));
        }
      }
      reply.owners = std::move(owners);
      done(std::move(reply));
    });
  }

  void ping(Deadline, std::function<void(std::optional<Error>)> done) override {
    withMap([this, done = std::move(done)](std::optional<Error> error) mutable {
      if (error) return done(error);
      std::set<Node*> masters(slots_.begin(), slots_.end());
      masters.erase(nullptr);
      if (masters.empty()) return done(Error(ErrorCode::ServerError, "the cluster serves no slot"));
      struct Pings {
        std::size_t pending;
        std::optional<Error> first;
        std::function<void(std::optional<Error>)> done;
      };
      auto pings = std::make_shared<Pings>(Pings{masters.size(), std::nullopt, std::move(done)});
      for (Node* node : masters) {
        pingOn(*node->connection, [pings, name = node->connection->name()](std::optional<Error> failed) {
          if (failed && !pings->first) pings->first = Error(failed->code(), name + ": " + failed->what());
          if (--pings->pending == 0) pings->done(pings->first);
        });
      }
    });
  }

  void suspect() override { refresh(); }

  void onMasterConnected(std::function<void()> hook) override {
    onMasterConnected_ = std::move(hook);
    for (auto& [name, node] : nodes_) node->connection->onOpen(onMasterConnected_);
  }

  void close(const Error& error) override {
    closed_ = true;
    releaseWaiting(error);
    for (auto& [name, node] : nodes_) node->connection->close(error);
  }

  void closeSilently() noexcept override {
    *alive_ = false;
    for (auto& [name, node] : nodes_) node->connection->closeSilently();
  }

 private:
  struct Node {
    std::string host;
    int port = 0;
    std::unique_ptr<RedisConnection> connection;
  };

  // One execute(): every command settles once, then done runs.
  struct Execution {
    std::vector<KeyedCommand> commands;
    std::vector<CommandOutcome> outcomes;
    std::vector<bool> settled;
    std::vector<int> redirects;  // MOVED and ASK followed
    std::vector<int> retries;    // TRYAGAIN and CLUSTERDOWN waited out
    std::size_t pending = 0;
    std::size_t sends = 0;
    Deadline deadline;
    std::function<void(std::vector<CommandOutcome>, std::size_t)> done;
  };
  using ExecutionPtr = std::shared_ptr<Execution>;

  Node& node(const std::string& host, int port) {
    const std::string name = host + ":" + std::to_string(port);
    auto& slot = nodes_[name];
    if (!slot) {
      slot = std::make_unique<Node>();
      slot->host = host;
      slot->port = port;
      slot->connection = std::make_unique<RedisConnection>(loop_, serverSettings(settings_, host, port, 0));
      if (onMasterConnected_) slot->connection->onOpen(onMasterConnected_);
    }
    return *slot;
  }

  Node& nodeForSlot(std::uint16_t slot) {
    if (Node* owner = slots_[slot]) return *owner;
    // A slot no master serves (yet): any node answers MOVED or CLUSTERDOWN, which we follow.
    for (Node* owner : slots_) {
      if (owner) return *owner;
    }
    const RedisEndpoint& seed = settings_.url.endpoints.front();
    return node(seed.host, seed.port);
  }

  void run(std::vector<KeyedCommand> commands, Deadline deadline,
           std::function<void(std::vector<CommandOutcome>, std::size_t)> done) {
    auto execution = std::make_shared<Execution>();
    execution->outcomes.resize(commands.size());
    execution->settled.assign(commands.size(), false);
    execution->redirects.assign(commands.size(), 0);
    execution->retries.assign(commands.size(), 0);
    execution->pending = commands.size();
    execution->commands = std::move(commands);
    execution->deadline = deadline;
    execution->done = std::move(done);
    if (execution->pending == 0) {
      loop_.at(Clock::now(), [execution] { execution->done({}, 0); });
      return;
    }
    withMap([this, execution](std::optional<Error> error) {
      std::vector<std::size_t> all(execution->commands.size());
      for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
      if (error) {
        for (std::size_t i : all) settle(execution, i, CommandOutcome{{}, error, false});
        return;
      }
      dispatch(execution, all);
    });
  }

  // Sends the commands `which` to their slots' masters: one pipeline per node.
  void dispatch(const ExecutionPtr& execution, const std::vector<std::size_t>& which) {
    std::map<Node*, std::vector<std::size_t>> byNode;
    for (std::size_t i : which) byNode[&nodeForSlot(keySlot(execution->commands[i].key))].push_back(i);
    for (auto& [owner, indices] : byNode) sendTo(*owner, execution, std::move(indices), false);
  }

  void sendTo(Node& target, const ExecutionPtr& execution, std::vector<std::size_t> indices, bool asking) {
    std::string resp;
    for (std::size_t i : indices) {
      if (asking) appendCommand(resp, {"ASKING"});
      resp += execution->commands[i].resp;
    }
    ++execution->sends;
    const std::size_t perCommand = asking ? 2 : 1;
    std::weak_ptr<bool> alive = alive_;
    target.connection->send(resp, indices.size() * perCommand,
                            [this, alive, execution, indices, asking, perCommand](RedisOutcome outcome) {
                              if (alive.expired()) return;
                              if (outcome.error) {
                                for (std::size_t i : indices) {
                                  settle(execution, i, CommandOutcome{{}, outcome.error, outcome.written});
                                }
                                refresh();  // its master may have failed over
                                return;
                              }
                              answered(execution, indices, outcome.replies, perCommand, asking);
                            });
  }

  void answered(const ExecutionPtr& execution, const std::vector<std::size_t>& indices, std::vector<Reply>& replies,
                std::size_t perCommand, bool wasAsking) {
    std::vector<std::size_t> moved;
    std::vector<std::size_t> again;
    std::map<std::pair<std::string, int>, std::vector<std::size_t>> asks;
    for (std::size_t k = 0; k < indices.size(); ++k) {
      const std::size_t i = indices[k];
      Reply& reply = replies[k * perCommand + perCommand - 1];
      const Redirect redirect = redirectOf(reply.get());
      const bool retry = redirect.kind == Redirect::Kind::TryAgain;
      if (redirect.kind == Redirect::Kind::None || (wasAsking && redirect.kind == Redirect::Kind::Ask) ||
          (retry ? ++execution->retries[i] > kMaxRetries : ++execution->redirects[i] > kMaxRedirects) ||
          Clock::now() >= execution->deadline) {
        if (redirect.kind == Redirect::Kind::None || (wasAsking && redirect.kind == Redirect::Kind::Ask)) {
          settle(execution, i, CommandOutcome{std::move(reply), std::nullopt, true});
        } else {
          settle(execution, i,
                 CommandOutcome{{}, Error(ErrorCode::Timeout, "Redis Cluster kept redirecting the command (" +
                                                                  std::string(replyText(reply.get()).substr(0, 60)) + ")"),
                                false});
        }
        continue;
      }
      switch (redirect.kind) {
        case Redirect::Kind::Moved:
          slots_[redirect.slot] = &node(redirect.host, redirect.port);
          moved.push_back(i);
          break;
        case Redirect::Kind::Ask: asks[{redirect.host, redirect.port}].push_back(i); break;
        case Redirect::Kind::TryAgain: again.push_back(i); break;
        case Redirect::Kind::None: break;
      }
    }
    if (!moved.empty()) {
      refresh();  // the map is stale: reload it once, in the background
      dispatch(execution, moved);
    }
    for (auto& [address, which] : asks) sendTo(node(address.first, address.second), execution, which, true);
    if (!again.empty()) {
      // A slot in migration (TRYAGAIN) or a cluster without a quorum for now (CLUSTERDOWN).
      refresh();
      const int attempt = execution->retries[again.front()];
      const auto backoff = std::chrono::milliseconds{std::min(100, 5 << std::min(attempt, 5))};
      std::weak_ptr<bool> alive = alive_;
      loop_.at(resendAt(Clock::now(), backoff, execution->deadline), [this, alive, execution, again] {
        if (alive.expired()) return;
        // Never sent again once the deadline has passed: the caller gave up at the deadline, and
        // what it queued then (a failed acquire's cleanup, right behind where its SET would be)
        // must not be overtaken by the command it gave up on.
        if (Clock::now() >= execution->deadline) {
          for (std::size_t i : again) {
            settle(execution, i,
                   CommandOutcome{{}, Error(ErrorCode::Timeout, "Redis Cluster was down (CLUSTERDOWN or TRYAGAIN) "
                                                                "until the deadline"),
                                  false});
          }
          return;
        }
        dispatch(execution, again);
      });
    }
  }

  void settle(const ExecutionPtr& execution, std::size_t index, CommandOutcome outcome) {
    if (execution->settled[index]) return;
    execution->settled[index] = true;
    execution->outcomes[index] = std::move(outcome);
    if (--execution->pending > 0) return;
    auto done = std::move(execution->done);
    done(std::move(execution->outcomes), execution->sends);
  }

  // --- The slot map ------------------------------------------------------------------------------

  void withMap(std::function<void(std::optional<Error>)> then) {
    if (closed_) return then(Error(ErrorCode::ShutDown, "the client is shut down"));
    if (mapKnown_) return then(std::nullopt);
    waiting_.push_back(std::move(then));
    refresh();
  }

  // Runs what waited for the first map: with the error when none could be loaded.
  void releaseWaiting(const std::optional<Error>& error) {
    auto waiting = std::move(waiting_);
    waiting_.clear();
    for (auto& then : waiting) then(error);
  }

  // Reloads the map from the first node that answers CLUSTER SLOTS: the seeds, then the others.
  // A node that has not answered within the connect timeout is not waited for: the next one is
  // asked too (the earlier ones may still answer), so that a seed that accepts TCP and never
  // answers delays the map by a connect timeout, not by a whole command timeout.
  void refresh() {
    if (refreshing_ || closed_) return;
    refreshing_ = true;
    ++refreshToken_;
    candidates_.clear();
    nextCandidate_ = 0;
    outstanding_ = 0;
    lastError_ = "no node of the cluster answered CLUSTER SLOTS";
    for (const auto& seed : settings_.url.endpoints) candidates_.emplace_back(seed.host, seed.port);
    for (const auto& [name, known] : nodes_) candidates_.emplace_back(known->host, known->port);
    askNextForSlots();
  }

  void askNextForSlots() {
    if (closed_ || !refreshing_) return;
    loop_.cancel(refreshTimer_);
    refreshTimer_ = 0;
    if (nextCandidate_ >= candidates_.size()) {
      if (outstanding_ == 0) return refreshFailed();
      // The last ones asked may still answer, within a command timeout.
      std::weak_ptr<bool> alive = alive_;
      const std::uint64_t token = refreshToken_;
      refreshTimer_ = loop_.at(saturatingAdd(Clock::now(), settings_.options.commandTimeout), [this, alive, token] {
        if (alive.expired() || token != refreshToken_ || !refreshing_) return;
        refreshTimer_ = 0;
        lastError_ = "CLUSTER SLOTS timed out";
        refreshFailed();
      });
      return;
    }
    const std::size_t attempt = nextCandidate_++;
    Node& asked = node(candidates_[attempt].first, candidates_[attempt].second);
    const std::uint64_t token = refreshToken_;
    ++outstanding_;
    std::string resp;
    appendCommand(resp, {"CLUSTER", "SLOTS"});
    std::weak_ptr<bool> alive = alive_;
    const std::string host = asked.host;
    asked.connection->send(resp, 1, [this, alive, attempt, token, host](RedisOutcome outcome) {
      if (alive.expired() || token != refreshToken_ || !refreshing_) return;  // that refresh ended
      --outstanding_;
      std::string error;
      if (outcome.error) {
        error = outcome.error->what();
      } else if (isErrorReply(outcome.replies.front().get())) {
        error = std::string(replyText(outcome.replies.front().get()));
      } else if (!applySlots(outcome.replies.front().get(), host)) {
        error = "a malformed CLUSTER SLOTS reply";
      }
      if (error.empty()) {
        loop_.cancel(refreshTimer_);
        refreshTimer_ = 0;
        ++refreshToken_;
        mapKnown_ = true;
        refreshing_ = false;
        releaseWaiting(std::nullopt);
        return;
      }
      lastError_ = std::move(error);
      // The newest one failed: the next at once. An older one failed: the newest is still waited for.
      if (attempt + 1 == nextCandidate_) {
        askNextForSlots();
      } else if (nextCandidate_ >= candidates_.size() && outstanding_ == 0) {
        refreshFailed();
      }
    });
    const std::uint64_t asking = nextCandidate_;
    const auto patience = std::min(settings_.options.commandTimeout, settings_.options.connectTimeout);
    refreshTimer_ = loop_.at(saturatingAdd(Clock::now(), patience), [this, alive, token, asking] {
      if (alive.expired() || token != refreshToken_ || !refreshing_ || asking != nextCandidate_) return;
      refreshTimer_ = 0;
      askNextForSlots();
    });
  }

  void refreshFailed() {
    loop_.cancel(refreshTimer_);
    refreshTimer_ = 0;
    ++refreshToken_;
    refreshing_ = false;
    if (!mapKnown_) releaseWaiting(Error(ErrorCode::ConnectFailed, "Redis Cluster: " + lastError_));
  }

  // Entries [start, end, [ip, port, id, ...], replicas...]; an empty ip means the node asked.
  bool applySlots(const ReplyValue* reply, const std::string& askedHost) {
    if (reply->type != REDIS_REPLY_ARRAY) return false;
    std::vector<Node*> slots(kSlots, nullptr);
    for (std::size_t e = 0; e < reply->elements; ++e) {
      const ReplyValue* entry = reply->element[e];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements < 3) return false;
      const ReplyValue* start = entry->element[0];
      const ReplyValue* end = entry->element[1];
      const ReplyValue* master = entry->element[2];
      if (!isInteger(start) || !isInteger(end) || master->type != REDIS_REPLY_ARRAY || master->elements < 2) return false;
      if (master->element[0]->type != REDIS_REPLY_STRING || !isInteger(master->element[1])) return false;
      std::string ip(replyText(master->element[0]));
      if (ip == "?") continue;  // an endpoint the node does not know
      if (ip.empty()) ip = askedHost;
      const long long port = master->element[1]->integer;
      if (start->integer < 0 || end->integer >= static_cast<long long>(kSlots) || start->integer > end->integer ||
          port <= 0 || port > 65535) {
        return false;
      }
      Node* owner = &node(ip, static_cast<int>(port));
      for (long long slot = start->integer; slot <= end->integer; ++slot) slots[static_cast<std::size_t>(slot)] = owner;
    }
    slots_ = std::move(slots);
    return true;
  }

  Loop& loop_;
  const TopologySettings settings_;
  std::map<std::string, std::unique_ptr<Node>> nodes_;  // "host:port"
  std::vector<Node*> slots_;
  bool mapKnown_ = false;
  bool refreshing_ = false;
  bool closed_ = false;
  std::vector<std::pair<std::string, int>> candidates_;
  std::size_t nextCandidate_ = 0;  // of candidates_, the next to ask
  std::size_t outstanding_ = 0;    // asked, not answered yet
  std::string lastError_;
  std::uint64_t refreshToken_ = 0;
  Loop::TimerId refreshTimer_ = 0;
  std::vector<std::function<void(std::optional<Error>)>> waiting_;
  std::function<void()> onMasterConnected_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

std::uint16_t keySlot(std::string_view key) noexcept {
  // The first '{' and the first '}' after it: a non-empty tag between them is what is hashed.
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  return static_cast<std::uint16_t>(crc16(key) & (kSlots - 1));
}

std::unique_ptr<RedisTopology> makeClusterTopology(Loop& loop, TopologySettings settings) {
  return std::make_unique<ClusterTopology>(loop, std::move(settings));
}

}  // namespace streamlock::detail
