// The Client's lifecycle: construction, handing completions over, shutdown, and fork().
#include "client/core.h"

#include <openssl/sha.h>
#include <unistd.h>

#include "client/fork.h"
#include "client/options.h"
#include "pg/access.h"
#include "client/waiter.h"
#include "redis/resp.h"
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
  c.orphansCleaned = orphansCleaned.load();
  return c;
}

namespace {

// The SHA1 that EVALSHA names a script by.
std::string sha1Hex(const char* text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text), std::char_traits<char>::length(text), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : digest) {
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
  }
  return out;
}

std::optional<RedisUrl> redisUrlOf(const Options& options) {
  if (options.redis.url.empty()) return std::nullopt;
  return parseRedisUrl(options.redis.url);
}

TlsSettings tlsSettings(const RedisTlsOptions& tls) {
  return {tls.caFile, tls.certFile, tls.keyFile, tls.insecureSkipVerify};
}

}  // namespace

ClientCore::ClientCore(Options options)
    : options_(validated(std::move(options))),
      logger_(options_.logger),
      timing_(protocol::writerTiming(options_.lock, options_.redis.commandTimeout)),
      redisUrl_(redisUrlOf(options_)),
      breaker_(options_.breaker),
      delivery_(std::make_shared<Delivery>(options_.executor, logger_)),
      pid_(::getpid()),
      extendSha_(sha1Hex(protocol::kExtendScript)),
      releaseSha_(sha1Hex(protocol::kReleaseScript)) {
  if (redisUrl_ && redisUrl_->tls) tls_ = TlsContext::create(tlsSettings(options_.redis.tls));
  if (!options_.postgres.conninfo.empty()) {
    // One memory of hung hosts for both pools: a host the main pool found hung is tried last by
    // the repairs too, and the other way round.
    auto demotions = std::make_shared<std::vector<Deadline>>();
    PgPoolWiring main{loop_, delivery_, options_.postgres, logger_};
    main.demotions = demotions;
    postgres_ = PgPoolAccess::make(std::move(main));
    // Repairs get sessions whose server-side timeouts abort a statement blocked on a row lock.
    PostgresOptions repair = options_.postgres;
    repair.poolSize = options_.repair.poolSize;
    repair.acquireTimeout = options_.repair.lockTimeout;
    repair.settings.emplace_back("lock_timeout", std::to_string(options_.repair.lockTimeout.count()) + "ms");
    repair.settings.emplace_back("statement_timeout", std::to_string(options_.repair.statementTimeout.count()) + "ms");
    PgPoolWiring repairs{loop_, delivery_, std::move(repair), logger_};
    repairs.demotions = demotions;
    repairPostgres_ = PgPoolAccess::make(std::move(repairs));
  }
  ForkRegistry::add(this);
}

ClientCore::~ClientCore() {
  shutdown();
  ForkRegistry::remove(this);
}

bool ClientCore::onLoop(Loop::Task task) {
  if (!usable()) return false;
  // Already on the I/O thread (a completion run inline by the host's executor that starts the next
  // call): at the end of this iteration, without a wake-up through the loop's queue. Still never
  // inside the call.
  if (loop_.inLoopThread()) {
    loop_.atEndOfIteration(std::move(task));
    return true;
  }
  return loop_.post(std::move(task));
}

void ClientCore::complete(std::function<void()> task) noexcept {
  if (delivery_->post(std::move(task))) return;
  // Shut down: the Delivery took nothing. Without an executor, run it here.
  if (!task) return;
  try {
    task();
  } catch (const std::exception& e) {
    log(LogLevel::Error, "a completion threw: {}", e.what());
  } catch (...) {
    log(LogLevel::Error, "a completion threw");
  }
}

std::uint64_t ClientCore::started(std::shared_ptr<Operation> operation) {
  const std::uint64_t key = nextOperation_++;
  inFlight_.emplace(key, std::move(operation));
  return key;
}

void ClientCore::finished(std::uint64_t key) noexcept { inFlight_.erase(key); }

void ClientCore::countRedisFailure(const Error& error) noexcept {
  bump(counters_.redisErrors);
  if (error.code() == ErrorCode::Timeout) bump(counters_.redisTimeouts);
}

RedisTopology& ClientCore::redis() {
  if (!redis_) {
    redis_ = makeTopology(loop_, TopologySettings{*redisUrl_, tls_, options_.redis, logger_, redisGauges_});
    redis_->onMasterConnected([this] { queueUnsentCleanups(); });
  }
  return *redis_;
}

void ClientCore::shutdown() noexcept {
  if (forked_.load() || ::getpid() != pid_) {
    forked_ = true;
    abandonAfterFork();
    return;
  }
  const bool first = !shutDown_.exchange(true, std::memory_order_acq_rel);
  if (loop_.inLoopThread()) {
    // On the I/O thread (a completion that an inline executor runs there): this thread cannot wait
    // for itself. The shutdown runs at the end of this iteration, outside whatever called back;
    // whoever destroys the Client afterwards waits for it to finish.
    if (first) beginShutdownOnLoop();
    return;
  }
  if (first) {
    // A first call racing this one either queued its task before (the thread has started: the
    // shutdown runs after it and ends what it started) or finds the loop stopped and fails.
    auto waiter = Waiter<bool>::make();
    if (loop_.postIfStartedElseStop([this, waiter] { shutdownOnLoop([waiter] { waiter->set(true); }); })) {
      waiter->wait();
    } else {
      markShutdownFinished();
    }
  } else {
    // Begun elsewhere (another thread, or the I/O thread): finished before the loop is stopped.
    std::unique_lock<std::mutex> lock(shutdownMutex_);
    shutdownDone_.wait(lock, [this] { return shutdownFinished_; });
  }
  loop_.stop();
  pending_.clear();
  delivery_->stop();
}

void ClientCore::releaseOnLoopThread(std::shared_ptr<ClientCore> self) noexcept {
  // The loop thread keeps the Client's reference until it has left its loop: the core (loop
  // included) is never freed under an iteration. The loop stops once the shutdown finished.
  quitWhenShutDown_ = true;
  loop_.keepUntilExit(std::move(self));
  if (!shutDown_.exchange(true, std::memory_order_acq_rel)) return beginShutdownOnLoop();
  bool finished = false;
  {
    std::lock_guard<std::mutex> lock(shutdownMutex_);
    finished = shutdownFinished_;
  }
  if (finished) loop_.stop();  // else the shutdown under way stops it when it finishes
}

void ClientCore::beginShutdownOnLoop() noexcept {
  try {
    loop_.atEndOfIteration([this] {
      shutdownOnLoop([this] {
        if (quitWhenShutDown_) loop_.stop();  // on the loop thread: leaves after this iteration
      });
    });
  } catch (...) {
    markShutdownFinished();  // out of memory: nothing ends what is in flight, but nobody waits forever
    if (quitWhenShutDown_) loop_.stop();
  }
}

void ClientCore::markShutdownFinished() noexcept {
  {
    std::lock_guard<std::mutex> lock(shutdownMutex_);
    shutdownFinished_ = true;
  }
  shutdownDone_.notify_all();
}

namespace {

// Completes the shutdown once the releases were answered or timed out, whichever comes first.
struct ShutdownStep {
  std::function<void()> finish;
  bool done = false;
  int waiting = 0;  // the shutdown's pipeline, and the releases on the wire, when there are some
  void operator()() {
    if (done) return;
    done = true;
    finish();
  }
  void partDone() {
    if (--waiting <= 0) (*this)();
  }
};

}  // namespace

void ClientCore::shutdownOnLoop(std::function<void()> done) {
  closing_ = true;
  // 1. Everything in flight completes now (unknown / failed); an acquire whose SET may have run
  //    adds its cleanup to the pipeline below.
  auto inFlight = std::move(inFlight_);
  inFlight_.clear();
  for (auto& entry : inFlight) entry.second->abortForShutdown();

  // 2. No more heartbeats.
  for (auto& [raw, entry] : heartbeats_) {
    entry->stopped = true;
    loop_.cancel(entry->dueTimer);
    loop_.cancel(entry->lossTimer);
  }
  heartbeats_.clear();
  dueHeartbeats_.clear();

  // 3. The locks still held, and the possible orphans of failed acquires: one pipeline of
  //    compare-and-deletes, bounded by commandTimeout.
  std::set<std::pair<std::string, std::string>> held;
  {
    std::lock_guard<std::mutex> guard(heldMutex_);
    held.swap(held_);
    heartbeatsOf_.clear();
    // Releases whose task has not run yet: they find their entry gone and leave the delete to us.
    held.insert(releasePending_.begin(), releasePending_.end());
    releasePending_.clear();
  }
  auto step = std::make_shared<ShutdownStep>();
  step->finish = [this, done = std::move(done)] {
    // Statements in flight fail with ShutDown (their callers return), connections end.
    if (postgres_) PgPoolAccess::core(*postgres_).close();
    if (repairPostgres_) PgPoolAccess::core(*repairPostgres_).close();
    // Fails whatever is still queued on it (a release, a PING...), so that every caller returns.
    releasesDrained_ = nullptr;
    if (redis_) redis_->close(Error(ErrorCode::ShutDown, "the client is shut down"));
    cleanups_.clear();
    cleanupsSent_.clear();
    markShutdownFinished();  // a shutdown() that did not begin this one may stop the loop now
    done();
  };
  std::vector<std::pair<std::string, std::string>> toDelete;
  for (const auto& [chatId, streamId] : held) toDelete.emplace_back(lockKey(chatId), streamId);
  const std::size_t heldCount = toDelete.size();
  for (const auto& [which, expiry] : cleanups_) {
    if (Clock::now() < expiry) toDelete.push_back(which);
  }
  const Deadline deadline = deadlineIn(options_.redis.commandTimeout);
  // Releases on the wire: the connection stays open until they were answered (or the deadline
  // passed), so that they complete with their own outcome instead of failing under a close.
  if (!releasing_.empty()) {
    ++step->waiting;
    releasesDrained_ = [step] { step->partDone(); };
  }
  const bool deleting = redisUrl_ && !toDelete.empty();
  if (deleting) {
    std::vector<KeyedCommand> commands;
    for (const auto& [key, streamId] : toDelete) {
      KeyedCommand& command = commands.emplace_back();
      command.key = key;
      appendCommand(command.resp, {"EVAL", protocol::kReleaseScript, "1", key, streamId});
    }
    ++step->waiting;
    redis().execute(std::move(commands), deadline, [this, step, heldCount](std::vector<CommandOutcome> outcomes) {
      std::size_t failed = 0;
      for (std::size_t i = 0; i < outcomes.size(); ++i) {
        if (outcomes[i].error) {
          ++failed;
        } else if (isIntegerOne(outcomes[i].reply.get())) {
          bump(i < heldCount ? counters_.locksReleased : counters_.orphansCleaned);
        }
      }
      if (failed > 0) {
        log(LogLevel::Warning, "releasing {} stream locks at shutdown failed (they expire by their TTL): {}", failed,
            outcomes.front().error ? outcomes.front().error->what() : "connection lost");
      }
      step->partDone();
    });
  }
  if (step->waiting == 0) return (*step)();
  loop_.at(deadline, [this, step, heldCount, deleting] {
    if (step->done) return;
    if (deleting) {
      log(LogLevel::Warning, "releasing {} stream locks at shutdown timed out (they expire by their TTL)", heldCount);
    }
    (*step)();
  });
}

void ClientCore::abandonAfterFork() noexcept {
  // A fork() child's copy of a parent's Client: its threads do not exist here, and its sockets are
  // the parent's. Forget the threads, close this process's copies of the descriptors without a byte
  // on the wire, and let the destructors free the memory.
  loop_.abandonAfterFork();
  delivery_->abandonAfterFork();
  if (redis_) redis_->closeSilently();
  if (postgres_) PgPoolAccess::abandonAfterFork(*postgres_);
  if (repairPostgres_) PgPoolAccess::abandonAfterFork(*repairPostgres_);
  inFlight_.clear();
  heartbeats_.clear();
  dueHeartbeats_.clear();
}

// In this order everywhere: the loop's work, its post queue, the callback queue, the held locks (the
// I/O thread takes the last three only while it holds the first; no thread holds one of them while
// it waits for an earlier one).
void ClientCore::lockForFork() noexcept {
  if (!loop_.inLoopThread()) loop_.workMutex().lock();
  loop_.postMutex().lock();
  delivery_->queueMutex().lock();
  heldMutex_.lock();
}

void ClientCore::unlockAfterFork(bool child) noexcept {
  heldMutex_.unlock();
  delivery_->queueMutex().unlock();
  loop_.postMutex().unlock();
  if (!loop_.inLoopThread()) loop_.workMutex().unlock();
  if (child) forked_ = true;
}

}  // namespace detail
}  // namespace streamlock
