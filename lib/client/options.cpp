// Options are checked once, by Client's constructor: every duration positive (zero only where it
// has a documented meaning) and at most kMaxDuration, so that no deadline derived from one can
// overflow; counts at least 1; the heartbeat well inside the lock's TTL.
#include "client/options.h"

#include "redis/resp.h"

#include <fmt/format.h>

#include "streamlock/error.h"
#include "streamlock/protocol.h"

namespace streamlock::detail {
namespace {

[[noreturn]] void refuse(const std::string& why) { throw Error(ErrorCode::InvalidArgument, why); }

template <typename Rep, typename Period>
void duration(const char* name, std::chrono::duration<Rep, Period> value, bool zeroAllowed = false) {
  if (value < value.zero() || (value == value.zero() && !zeroAllowed)) {
    refuse(fmt::format("{} must be positive (got {} ms)", name,
                       std::chrono::duration_cast<std::chrono::duration<long double, std::milli>>(value).count()));
  }
  // Compared in long double: the conversion to milliseconds could itself overflow.
  using LongMs = std::chrono::duration<long double, std::milli>;
  if (std::chrono::duration_cast<LongMs>(value) > std::chrono::duration_cast<LongMs>(kMaxDuration)) {
    refuse(fmt::format("{} is too large (at most {} ms)", name, kMaxDuration.count()));
  }
}

void count(const char* name, std::size_t value) {
  if (value == 0) refuse(fmt::format("{} must be at least 1", name));
}

}  // namespace

Options validated(Options options) {
  const RedisOptions& redis = options.redis;
  duration("redis.connectTimeout", redis.connectTimeout);
  duration("redis.commandTimeout", redis.commandTimeout);
  duration("redis.lookupDeadline", redis.lookupDeadline);
  count("redis.mgetChunkSize", redis.mgetChunkSize);
  if (redis.mgetChunkSize > static_cast<std::size_t>(kMaxReplyElements)) {
    refuse(fmt::format("redis.mgetChunkSize is too large (at most {} keys per MGET)", kMaxReplyElements));
  }

  const PostgresOptions& postgres = options.postgres;
  count("postgres.poolSize", postgres.poolSize);
  duration("postgres.connectTimeout", postgres.connectTimeout);
  duration("postgres.hostAttemptTimeout", postgres.hostAttemptTimeout);
  duration("postgres.statementTimeout", postgres.statementTimeout);
  duration("postgres.acquireTimeout", postgres.acquireTimeout);

  const LockOptions& lock = options.lock;
  if (lock.keyPrefix.find('\0') != std::string::npos) refuse("lock.keyPrefix must not contain a NUL byte");
  duration("lock.ttl", lock.ttl);
  if (lock.ttl < Seconds{1}) refuse("lock.ttl must be at least one second (SET EX counts whole seconds)");
  duration("lock.heartbeatInterval", lock.heartbeatInterval, /*zeroAllowed=*/true);
  duration("lock.acquirePollInterval", lock.acquirePollInterval);
  // After an extend was sent, the lock is certainly held for ttl - max(commandTimeout, 500 ms); the
  // next extend must go out well before that window closes.
  const protocol::WriterTiming timing = protocol::writerTiming(lock, redis.commandTimeout);
  if (timing.ownershipWindow <= Milliseconds{0}) {
    refuse(fmt::format("redis.commandTimeout ({} ms) must be shorter than lock.ttl minus 500 ms", redis.commandTimeout.count()));
  }
  if (timing.heartbeatInterval >= timing.ownershipWindow) {
    refuse(fmt::format("lock.heartbeatInterval ({} ms) must be shorter than lock.ttl - max(redis.commandTimeout, 500 ms) "
                       "= {} ms, the time a lock is certainly held after an extend",
                       timing.heartbeatInterval.count(), timing.ownershipWindow.count()));
  }

  if (options.breaker.failureThreshold > 0) duration("breaker.coolDown", options.breaker.coolDown);

  const RepairOptions& repair = options.repair;
  for (const auto& [name, value] : {std::pair{"repair.table", &repair.table}, std::pair{"repair.idColumn", &repair.idColumn},
                                    std::pair{"repair.markerColumn", &repair.markerColumn}}) {
    if (value->empty() || value->find('\0') != std::string::npos) {
      refuse(fmt::format("{} must be a non-empty identifier without NUL bytes", name));
    }
  }
  duration("repair.lockTimeout", repair.lockTimeout);
  duration("repair.statementTimeout", repair.statementTimeout);
  count("repair.poolSize", repair.poolSize);

  if (!options.logger) options.logger = logToStderr;
  return options;
}

}  // namespace streamlock::detail
