#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "client_state.h"
#include "reconcile_one.h"
#include "redis_reply.h"
#include "streamlock/error.h"

namespace streamlock {

const char* toString(BreakerState state) noexcept {
  switch (state) {
    case BreakerState::Closed: return "closed";
    case BreakerState::Open: return "open";
    case BreakerState::HalfOpen: return "half-open";
  }
  return "?";
}

const char* toString(RedisStatus::Mode mode) noexcept {
  switch (mode) {
    case RedisStatus::Mode::Disabled: return "disabled";
    case RedisStatus::Mode::Verified: return "verified";
    case RedisStatus::Mode::Unknown: return "unknown";
  }
  return "?";
}

namespace detail {

Counters AtomicCounters::snapshot() const noexcept {
  Counters c;
  c.lookupsVerified = lookupsVerified.load();
  c.lookupsUnknown = lookupsUnknown.load();
  c.lookupRoundTrips = lookupRoundTrips.load();
  c.redisErrors = redisErrors.load();
  c.redisTimeouts = redisTimeouts.load();
  c.breakerOpened = breakerOpened.load();
  c.breakerShortCircuits = breakerShortCircuits.load();
  c.markersRepaired = markersRepaired.load();
  c.repairFailures = repairFailures.load();
  c.locksAcquired = locksAcquired.load();
  c.locksReleased = locksReleased.load();
  c.heartbeatsExtended = heartbeatsExtended.load();
  c.heartbeatsFailed = heartbeatsFailed.load();
  c.heartbeatsLost = heartbeatsLost.load();
  return c;
}

std::string Script::sha() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return sha_;
}

void Script::setSha(std::string sha) {
  std::lock_guard<std::mutex> guard(mutex_);
  sha_ = std::move(sha);
}

namespace {

// Compare-and-expire: extend only while the lock still holds our stream id.
constexpr const char* kExtendScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('EXPIRE', KEYS[1], ARGV[2]) else return 0 end";

// Compare-and-delete: release only our own value.
constexpr const char* kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) else return 0 end";

[[noreturn]] void invalidOption(const std::string& why) { throw Error(ErrorCode::InvalidArgument, why); }

Options validated(Options options) {
  if (options.lock.ttl < Seconds{1}) invalidOption("lock.ttl must be at least one second");
  if (options.lock.heartbeatInterval < Milliseconds{0} || options.lock.heartbeatInterval >= options.lock.ttl) {
    invalidOption("lock.heartbeatInterval must be shorter than lock.ttl");
  }
  if (options.redis.mgetChunkSize == 0) invalidOption("redis.mgetChunkSize must be at least 1");
  if (options.redis.lookupDeadline <= Milliseconds{0}) invalidOption("redis.lookupDeadline must be positive");
  for (const std::string* name : {&options.repair.table, &options.repair.idColumn, &options.repair.markerColumn}) {
    if (name->empty() || name->find('\0') != std::string::npos) {
      invalidOption("repair table and column names must be non-empty identifiers");
    }
  }
  if (options.repair.lockTimeout <= Milliseconds{0} || options.repair.statementTimeout <= Milliseconds{0}) {
    invalidOption("repair.lockTimeout and repair.statementTimeout must be positive");
  }
  if (!options.logger) options.logger = logToStderr;
  return options;
}

std::optional<RedisUrl> redisUrlOf(const Options& options) {
  if (options.redis.url.empty()) return std::nullopt;
  return parseRedisUrl(options.redis.url);
}

}  // namespace

ClientState::ClientState(Options options)
    : options_(validated(std::move(options))),
      logger_(options_.logger),
      redisUrl_(redisUrlOf(options_)),
      breaker_(options_.breaker),
      extendScript_(kExtendScript),
      releaseScript_(kReleaseScript) {
  if (redisUrl_) redis_ = makeRedisPool(*redisUrl_, options_.redis);
  if (!options_.postgres.conninfo.empty()) {
    postgres_ = std::make_unique<PgPool>(options_.postgres, logger_);
    // Repairs get sessions whose server-side timeouts abort a statement blocked on a row lock.
    PostgresOptions repair = options_.postgres;
    repair.poolSize = options_.repair.poolSize;
    repair.acquireTimeout = options_.repair.lockTimeout;
    repair.settings.emplace_back("lock_timeout", std::to_string(options_.repair.lockTimeout.count()) + "ms");
    repair.settings.emplace_back("statement_timeout", std::to_string(options_.repair.statementTimeout.count()) + "ms");
    repairPostgres_ = std::make_unique<PgPool>(std::move(repair), logger_);
  }
}

ClientState::~ClientState() { shutdown(); }

void ClientState::countRedisFailure(const Error& error) noexcept {
  bump(counters_.redisErrors);
  if (error.code() == ErrorCode::Timeout) bump(counters_.redisTimeouts);
}

LookupStatus ClientState::lookup(const std::vector<const std::string*>& chatIds,
                                std::vector<std::string>& owners) noexcept {
  const LatencyTimer timer(lookupLatency_);
  owners.clear();
  if (chatIds.empty()) {
    bump(counters_.lookupsVerified);
    return LookupStatus::Verified;
  }
  try {
    if (redis_ && !shutDown_) {
      Deadline now = Clock::now();
      Breaker::Admission admission = breaker_.admit(now);
      if (admission == Breaker::Admission::Refuse) {
        bump(counters_.breakerShortCircuits);
      } else {
        try {
          owners = mget(chatIds, now + options_.redis.lookupDeadline);
          breaker_.succeeded(admission);
          bump(counters_.lookupsVerified);
          return LookupStatus::Verified;
        } catch (const Error& e) {
          if (e.code() == ErrorCode::PoolExhausted || e.code() == ErrorCode::ShutDown) {
            breaker_.inconclusive(admission);
          } else {
            countRedisFailure(e);
            if (breaker_.failed(admission, Clock::now())) {
              bump(counters_.breakerOpened);
              log(LogLevel::Warning, "Redis circuit breaker opened after {} consecutive failures; cooling down {} ms",
                  options_.breaker.failureThreshold, options_.breaker.coolDown.count());
            }
          }
          log(LogLevel::Warning, "lock lookup of {} chats answered unknown: {}", chatIds.size(), e.what());
        }
      }
    }
    owners.assign(chatIds.size(), std::string());
    if (pending_.size() > 0) {
      for (std::size_t i = 0; i < chatIds.size(); ++i) {
        if (auto owner = pending_.owner(*chatIds[i])) owners[i] = std::move(*owner);
      }
    }
  } catch (const std::exception& e) {
    owners.assign(chatIds.size(), std::string());
    log(LogLevel::Error, "lock lookup failed unexpectedly: {}", e.what());
  }
  bump(counters_.lookupsUnknown);
  return LookupStatus::Unknown;
}

namespace {

// Writes "<tag><number>\r\n", a RESP array or bulk-string header, at out; returns its end.
char* writeHeader(char* out, char tag, std::size_t number) {
  *out++ = tag;
  out = std::to_chars(out, out + 20, number).ptr;
  *out++ = '\r';
  *out++ = '\n';
  return out;
}

char* writeBytes(char* out, const std::string& bytes) {
  std::memcpy(out, bytes.data(), bytes.size());
  return out + bytes.size();
}

// The RESP of one pipeline of MGETs, one per chunk of chatIds, keys written in place: no per-key
// strings and no per-argument formatting. ranges receives each command's keys.
struct EncodedMgets {
  std::unique_ptr<char[]> bytes;  // not zero-filled first: every byte sent is written
  std::size_t size = 0;
  std::string_view view() const noexcept { return {bytes.get(), size}; }
};

EncodedMgets encodeMgets(const std::vector<const std::string*>& chatIds, const std::string& prefix, std::size_t chunk,
                        std::vector<std::pair<std::size_t, std::size_t>>& ranges) {
  constexpr std::size_t kHeader = 1 + 20 + 2;  // tag, the longest number, CRLF
  const std::string mget = "$4\r\nMGET\r\n";
  std::size_t capacity = 0;
  for (const std::string* id : chatIds) capacity += kHeader + prefix.size() + id->size() + 2;
  capacity += (chatIds.size() / chunk + 1) * (kHeader + mget.size());

  EncodedMgets resp{std::unique_ptr<char[]>(new char[capacity]), 0};
  char* out = resp.bytes.get();
  for (std::size_t begin = 0; begin < chatIds.size(); begin += chunk) {
    std::size_t end = std::min(chatIds.size(), begin + chunk);
    ranges.emplace_back(begin, end);
    out = writeHeader(out, '*', end - begin + 1);
    out = writeBytes(out, mget);
    for (std::size_t i = begin; i < end; ++i) {
      out = writeHeader(out, '$', prefix.size() + chatIds[i]->size());
      out = writeBytes(out, prefix);
      out = writeBytes(out, *chatIds[i]);
      *out++ = '\r';
      *out++ = '\n';
    }
  }
  resp.size = static_cast<std::size_t>(out - resp.bytes.get());
  return resp;
}

}  // namespace

std::vector<std::string> ClientState::mget(const std::vector<const std::string*>& chatIds, Deadline deadline) {
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  const EncodedMgets resp = encodeMgets(chatIds, options_.lock.keyPrefix, options_.redis.mgetChunkSize, ranges);
  std::vector<std::string> owners(chatIds.size());
  MgetReplies replies(owners);
  for (int attempt = 0;; ++attempt) {
    // Retried below when a reused connection turns out lost, so the idle check may be skipped.
    auto lease = redis_->acquire(deadline, RedisPool::IdleCheck::SkipRecent);
    try {
      bump(counters_.lookupRoundTrips);
      lease->pipelineMget(resp.view(), ranges, replies, deadline);
      return owners;
    } catch (const Error& e) {
      // A pooled connection that died idle without the idle check noticing: one more try on a
      // fresh connection, within the same deadline (MGET is read-only, so this is safe). The first
      // replies of a pipeline may have arrived before the connection failed: they are forgotten.
      if (e.code() == ErrorCode::ConnectionLost && lease.reused() && attempt == 0 && Clock::now() < deadline) {
        redis_->dropIdle();
        for (std::string& owner : owners) owner.clear();
        continue;
      }
      throw;
    }
  }
}

std::vector<Reply> ClientState::evalScript(Script& script, const std::vector<Argv>& args, Deadline deadline) {
  auto lease = redis_->acquire(deadline);
  auto load = [&] {
    Reply reply = lease->command({"SCRIPT", "LOAD", script.source()}, deadline);
    throwIfError(reply.get());
    if (reply->type != REDIS_REPLY_STRING) throw Error(ErrorCode::ServerError, "SCRIPT LOAD answered without a SHA");
    script.setSha(std::string(reply->str, reply->len));
  };
  if (script.sha().empty()) load();

  auto send = [&](const std::vector<std::size_t>& which) {
    std::string sha = script.sha();
    std::vector<Argv> commands;
    commands.reserve(which.size());
    for (std::size_t i : which) {
      Argv& command = commands.emplace_back();
      command.reserve(args[i].size() + 2);
      command.emplace_back("EVALSHA");
      command.emplace_back(sha);
      command.insert(command.end(), args[i].begin(), args[i].end());
    }
    return lease->pipeline(commands, deadline);
  };

  std::vector<std::size_t> all(args.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  std::vector<Reply> replies = send(all);

  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < replies.size(); ++i) {
    if (isNoScript(replies[i].get())) missing.push_back(i);
  }
  if (!missing.empty()) {
    load();
    std::vector<Reply> retried = send(missing);
    for (std::size_t j = 0; j < missing.size(); ++j) replies[missing[j]] = std::move(retried[j]);
  }
  return replies;
}

RedisStatus ClientState::redisStatus() noexcept {
  RedisStatus status;
  if (!redis_) return status;
  status.mode = RedisStatus::Mode::Unknown;
  Deadline now = Clock::now();
  status.breaker = breaker_.state(now);
  if (status.breaker == BreakerState::Open) {
    status.detail = "the circuit breaker is open after failed lookups";
    return status;
  }
  if (shutDown_) {
    status.detail = "the client is shut down";
    return status;
  }
  try {
    Deadline deadline = now + options_.redis.lookupDeadline;
    auto lease = redis_->acquire(deadline);
    Reply reply = lease->command({"PING"}, deadline);
    throwIfError(reply.get());
    status.mode = RedisStatus::Mode::Verified;
  } catch (const std::exception& e) {
    log(LogLevel::Debug, "Redis health check failed: {}", e.what());
    try {
      status.detail = e.what();  // the library's messages never contain a password
    } catch (...) {
      // Out of memory: the mode still says unknown.
    }
  }
  return status;
}

}  // namespace detail

Client::Client(Options options) : state_(std::make_shared<detail::ClientState>(std::move(options))) {}

Client::~Client() { shutdown(); }

ActiveStreams Client::getActiveChatStreamIds(const std::vector<std::string>& chatIds) noexcept {
  ActiveStreams out;
  try {
    std::vector<const std::string*> ids;
    ids.reserve(chatIds.size());
    for (const auto& id : chatIds) ids.push_back(&id);
    std::vector<std::string> owners;
    out.status = state_->lookup(ids, owners);
    for (std::size_t i = 0; i < owners.size(); ++i) {
      if (!owners[i].empty()) out.owners.emplace(chatIds[i], std::move(owners[i]));
    }
  } catch (const std::exception& e) {
    // Only allocation can fail here.
    state_->log(LogLevel::Error, "lock lookup failed unexpectedly: {}", e.what());
    out.status = LookupStatus::Unknown;
    out.owners.clear();
  }
  return out;
}

ReconcileResult Client::reconcileChatStreamMarkers(const std::vector<MarkerCandidate>& candidates,
                                                   const ReconcileOptions& options) noexcept {
  ReconcileResult result;
  try {
    // Only a persisted marker needs a lock to back it.
    auto marked = [](const MarkerCandidate& c) { return c.marker && !c.marker->empty(); };
    std::vector<const std::string*> ids;
    ids.reserve(candidates.size());
    for (const auto& candidate : candidates) {
      if (marked(candidate)) ids.push_back(&candidate.chatId);
    }
    std::vector<std::string> owners;
    result.status = state_->lookup(ids, owners);
    result.markers.reserve(candidates.size());
    std::size_t next = 0;
    for (const auto& candidate : candidates) {
      std::string owner = marked(candidate) ? std::move(owners[next++]) : std::string();
      result.markers.push_back(detail::reconcileOne(candidate, result.status, std::move(owner)));
    }

    if (options.repair && result.status == LookupStatus::Verified) {
      std::vector<StaleMarker> stale;
      for (const auto& marker : result.markers) {
        if (marker.staleMarker) stale.push_back({marker.chatId, *marker.staleMarker});
      }
      result.repair = state_->repair(stale);
    }
  } catch (const std::exception& e) {
    // Only allocation can fail here; answer as if Redis were unknown, preserving every marker.
    state_->log(LogLevel::Error, "reconciliation failed unexpectedly: {}", e.what());
    result = ReconcileResult{};
    result.status = LookupStatus::Unknown;
    for (const auto& candidate : candidates) {
      ReconciledMarker marker;
      marker.chatId = candidate.chatId;
      if (candidate.marker && !candidate.marker->empty()) {
        marker.state = MarkerState::Unknown;
        marker.streamId = candidate.marker;
      }
      result.markers.push_back(std::move(marker));
    }
  }
  return result;
}

RepairResult Client::repairStaleMarkers(const std::vector<StaleMarker>& markers) noexcept {
  return state_->repair(markers);
}

bool Client::writeMarker(const std::string& chatId, const std::string& streamId) {
  return state_->updateMarker(chatId, &streamId, {});
}

bool Client::clearMarker(const std::string& chatId, const std::string& streamId) {
  return state_->updateMarker(chatId, nullptr, streamId);
}

RedisStatus Client::redisStatus() noexcept { return state_->redisStatus(); }

PendingStreams& Client::pendingStreams() noexcept { return state_->pending_; }

PgPool* Client::postgres() noexcept { return state_->postgres_.get(); }

Counters Client::counters() const noexcept { return state_->counters_.snapshot(); }

BreakerState Client::breakerState() const noexcept { return state_->breaker_.state(detail::Clock::now()); }

const Options& Client::options() const noexcept { return state_->options_; }

void Client::shutdown() noexcept { state_->shutdown(); }

}  // namespace streamlock
