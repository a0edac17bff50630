// The read path: one pipelined round trip of MGETs under one deadline, the breaker, the unknown
// answer from the pending map, and the reconciliation on top of it.
#include <algorithm>

#include "client/core.h"
#include "client/waiter.h"
#include "protocol/reconcile_one.h"
#include "redis/resp.h"

namespace streamlock::detail {
namespace {

// The unknown answer without asking Redis: the local owners.
LookupAnswer localAnswer(ClientCore& core, const std::vector<const std::string*>& chatIds) {
  LookupAnswer answer;
  answer.owners.resize(chatIds.size());
  if (core.pending_.size() > 0) {
    for (std::size_t i = 0; i < chatIds.size(); ++i) {
      if (auto owner = core.pending_.owner(*chatIds[i])) answer.owners[i] = std::move(*owner);
    }
  }
  bump(core.counters_.lookupsUnknown);
  return answer;
}

class LookupOperation final : public Operation, public std::enable_shared_from_this<LookupOperation> {
 public:
  LookupOperation(ClientCore& core, std::vector<const std::string*> chatIds, std::function<void(LookupAnswer)> done)
      : core_(core), chatIds_(std::move(chatIds)), done_(std::move(done)) {}

  void start(std::uint64_t key, Deadline deadline, Breaker::Admission admission, RedisTopology& redis, Loop& loop) {
    key_ = key;
    admission_ = admission;
    loop_ = &loop;
    redis_ = &redis;
    auto self = shared_from_this();
    redis.lookup(core_.options_.lock.keyPrefix, chatIds_, core_.options_.redis.mgetChunkSize, deadline,
                 [self](LookupReply reply) { self->answered(std::move(reply)); });
    timer_ = loop.at(deadline, [self] {
      self->timer_ = 0;
      if (self->finished_) return;
      self->failed(Error(ErrorCode::Timeout, fmt::format("Redis lookup timed out after {} ms",
                                                         self->core_.options_.redis.lookupDeadline.count())));
      self->redis_->suspect();  // after: the failure it causes at once is not the one reported
    });
  }

  void abortForShutdown() override {
    if (finished_) return;
    loop_->cancel(timer_);
    core_.breaker_.inconclusive(admission_);
    unknown();
  }

 private:
  void answered(LookupReply reply) {
    if (finished_) return;
    loop_->cancel(timer_);
    bump(core_.counters_.lookupRoundTrips, reply.roundTrips);
    if (!reply.owners) return failed(*reply.owners.error());
    core_.breaker_.succeeded(admission_);
    bump(core_.counters_.lookupsVerified);
    LookupAnswer answer;
    answer.status = LookupStatus::Verified;
    answer.owners = std::move(reply.owners.value());
    finish(std::move(answer));
  }

  void failed(const Error& error) {
    if (finished_) return;
    core_.countRedisFailure(error);
    if (core_.breaker_.failed(admission_, Clock::now())) {
      bump(core_.counters_.breakerOpened);
      core_.log(LogLevel::Warning, "Redis circuit breaker opened after {} consecutive failures; cooling down {} ms",
                core_.options_.breaker.failureThreshold, core_.options_.breaker.coolDown.count());
    }
    core_.log(LogLevel::Warning, "lock lookup of {} chats answered unknown: {}", chatIds_.size(), error.what());
    unknown();
  }

  void unknown() { finish(localAnswer(core_, chatIds_)); }

  void finish(LookupAnswer answer) {
    finished_ = true;
    auto done = std::move(done_);
    core_.finished(key_);  // may destroy this operation: nothing of it is used after
    done(std::move(answer));
  }

  ClientCore& core_;
  std::vector<const std::string*> chatIds_;
  std::function<void(LookupAnswer)> done_;
  std::uint64_t key_ = 0;
  Breaker::Admission admission_ = Breaker::Admission::Ask;
  Loop* loop_ = nullptr;
  RedisTopology* redis_ = nullptr;
  Loop::TimerId timer_ = 0;
  bool finished_ = false;
};

}  // namespace

void ClientCore::lookup(std::vector<const std::string*> chatIds, std::function<void(LookupAnswer)> then) {
  // From the call to its answer, verified or unknown, for Client::metrics().
  const Deadline start = Clock::now();
  auto done = [this, start, then = std::move(then)](LookupAnswer answer) {
    lookupLatency_.record(Clock::now() - start);
    then(std::move(answer));
  };
  if (chatIds.empty()) {
    bump(counters_.lookupsVerified);
    LookupAnswer answer;
    answer.status = LookupStatus::Verified;
    return done(std::move(answer));
  }
  if (!redisUrl_ || !usable()) return done(localAnswer(*this, chatIds));
  // The deadline runs from the call, so that the hop to the I/O thread counts too.
  const Deadline deadline = deadlineIn(options_.redis.lookupDeadline);
  auto shared = std::make_shared<std::pair<std::vector<const std::string*>, std::function<void(LookupAnswer)>>>(
      std::move(chatIds), std::move(done));
  const bool posted = onLoop([this, shared, deadline] {
    auto& [ids, finish] = *shared;
    if (closing_) return finish(localAnswer(*this, ids));
    const Breaker::Admission admission = breaker_.admit(Clock::now());
    if (admission == Breaker::Admission::Refuse) {
      bump(counters_.breakerShortCircuits);
      return finish(localAnswer(*this, ids));
    }
    auto operation = std::make_shared<LookupOperation>(*this, std::move(ids), std::move(finish));
    const std::uint64_t key = started(operation);
    operation->start(key, deadline, admission, redis(), loop_);
  });
  if (!posted) {
    auto& [ids, finish] = *shared;
    finish(localAnswer(*this, ids));
  }
}

void ClientCore::reconcile(const std::vector<MarkerCandidate>* candidates, ReconcileOptions options,
                           std::function<void(ReconcileResult)> done) {
  std::vector<const std::string*> ids;
  ids.reserve(candidates->size());
  for (const auto& candidate : *candidates) {
    if (candidate.marker && !candidate.marker->empty()) ids.push_back(&candidate.chatId);
  }
  lookup(std::move(ids), [this, candidates, options, done = std::move(done)](LookupAnswer answer) mutable {
    ReconcileResult result;
    result.status = answer.status;
    result.markers.reserve(candidates->size());
    std::size_t next = 0;
    for (const auto& candidate : *candidates) {
      const bool marked = candidate.marker && !candidate.marker->empty();
      std::string owner = marked ? std::move(answer.owners[next++]) : std::string();
      reconcileOne(candidate, result.status, std::move(owner), result.markers);
    }
    if (!options.repair || result.status != LookupStatus::Verified) return done(std::move(result));
    std::vector<StaleMarker> stale = protocol::staleMarkers(result.markers);
    if (stale.empty()) return done(std::move(result));
    auto shared = std::make_shared<ReconcileResult>(std::move(result));
    repair(std::move(stale), [shared, done = std::move(done)](RepairResult repaired) mutable {
      shared->repair = repaired;
      done(std::move(*shared));
    });
  });
}

void ClientCore::redisStatus(std::function<void(RedisStatus)> done) {
  RedisStatus status;
  if (!redisUrl_) return done(status);
  status.mode = RedisStatus::Mode::Unknown;
  status.breaker = breaker_.state(Clock::now());
  if (status.breaker == BreakerState::Open) {
    status.detail = "the circuit breaker is open";
    return done(status);
  }
  if (!usable()) {
    status.detail = "the client is shut down";
    return done(status);
  }
  const Deadline deadline = deadlineIn(options_.redis.lookupDeadline);
  auto shared = std::make_shared<std::pair<RedisStatus, std::function<void(RedisStatus)>>>(status, std::move(done));
  const bool posted = onLoop([this, shared, deadline] {
    if (closing_) {
      shared->first.detail = "the client is shut down";
      return shared->second(std::move(shared->first));
    }
    struct Ping {
      bool finished = false;
      Loop::TimerId timer = 0;
    };
    auto ping = std::make_shared<Ping>();
    auto finish = [shared, ping](std::string detail, bool verified) {
      if (ping->finished) return;
      ping->finished = true;
      auto& [answer, callback] = *shared;
      answer.detail = std::move(detail);
      if (verified) answer.mode = RedisStatus::Mode::Verified;
      callback(std::move(answer));
    };
    redis().ping(deadline, [this, ping, finish](std::optional<Error> error) {
      loop_.cancel(ping->timer);
      if (error) return finish(error->what(), false);
      finish({}, true);
    });
    ping->timer = loop_.at(deadline, [this, finish] {
      finish(fmt::format("no answer to PING within {} ms", options_.redis.lookupDeadline.count()), false);
      redis().suspect();  // after: the failure it causes at once is not the one reported
    });
  });
  if (!posted) {
    auto& [answer, finish] = *shared;
    answer.detail = "the client is shut down";
    finish(std::move(answer));
  }
}

}  // namespace streamlock::detail
