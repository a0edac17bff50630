#include "streamlock/postgres.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <future>
#include <mutex>
#include <utility>

#include "client/delivery.h"
#include "io/fork_epoch.h"
#include "io/loop.h"
#include "pg/access.h"
#include "pg/pool.h"
#include "streamlock/error.h"

namespace streamlock {

void detail::PgResultDeleter::operator()(pg_result* result) const noexcept { PQclear(result); }

PgResult::PgResult(pg_result* result) : result_(result) {}

int PgResult::rows() const noexcept { return result_ ? PQntuples(result_.get()) : 0; }
int PgResult::columns() const noexcept { return result_ ? PQnfields(result_.get()) : 0; }

int PgResult::column(std::string_view name) const noexcept {
  for (int i = 0; i < columns(); ++i) {
    if (name == PQfname(result_.get(), i)) return i;
  }
  return -1;
}

bool PgResult::isNull(int row, int column) const noexcept {
  return !result_ || PQgetisnull(result_.get(), row, column) != 0;
}

std::string_view PgResult::value(int row, int column) const noexcept {
  if (!result_) return {};
  // libpq gives "" (length 0) for NULL, and nullptr for a row or column out of range.
  const char* text = PQgetvalue(result_.get(), row, column);
  if (text == nullptr) return {};
  return {text, static_cast<std::size_t>(PQgetlength(result_.get(), row, column))};
}

std::optional<std::string> PgResult::optional(int row, int column) const {
  if (isNull(row, column)) return std::nullopt;
  return std::string(value(row, column));
}

std::uint64_t PgResult::affectedRows() const noexcept {
  if (!result_) return 0;
  return std::strtoull(PQcmdTuples(result_.get()), nullptr, 10);
}

namespace detail {
namespace {

void validateOptions(const PostgresOptions& options) {
  const auto positive = [](Milliseconds value, const char* name) {
    if (value <= Milliseconds{0}) throw Error(ErrorCode::InvalidArgument, std::string("postgres.") + name + " must be positive");
  };
  positive(options.connectTimeout, "connectTimeout");
  positive(options.hostAttemptTimeout, "hostAttemptTimeout");
  positive(options.statementTimeout, "statementTimeout");
  if (options.acquireTimeout < Milliseconds{0}) {
    throw Error(ErrorCode::InvalidArgument, "postgres.acquireTimeout must not be negative");
  }
  if (options.pipelineDepth == 0 || options.pipelineDepth > 1024) {
    throw Error(ErrorCode::InvalidArgument, "postgres.pipelineDepth must be between 1 and 1024");
  }
}

Error shutDownError() { return Error(ErrorCode::ShutDown, "the PostgreSQL pool is closed"); }

// Calls a completion exactly once: with the outcome, or with ShutDown when the last copy of it is
// dropped uncalled (a task a stopping loop dropped). In a fork() child nothing is called.
class Once {
 public:
  using Sink = std::function<void(Result<PgResult>)>;
  Once(Sink sink, std::shared_ptr<std::atomic<bool>> abandoned)
      : sink_(std::move(sink)), abandoned_(std::move(abandoned)) {}
  ~Once() {
    if (!called_.load() && !abandoned_->load()) call(shutDownError());
  }
  Once(const Once&) = delete;
  Once& operator=(const Once&) = delete;

  void operator()(Result<PgResult> outcome) noexcept {
    if (called_.exchange(true)) return;
    call(std::move(outcome));
  }

 private:
  void call(Result<PgResult> outcome) noexcept {
    try {
      if (sink_) sink_(std::move(outcome));
    } catch (...) {
      // A completion that throws must not take the calling thread down.
    }
  }
  Sink sink_;
  std::shared_ptr<std::atomic<bool>> abandoned_;
  std::atomic<bool> called_{false};
};

// Runs done(outcome) on the delivery (the executor or the callback thread), or inline once the
// delivery no longer runs.
void deliver(const std::shared_ptr<Delivery>& delivery, const Completion<Result<PgResult>>& done,
             Result<PgResult> outcome) {
  if (!done) return;
  auto box = std::make_shared<Result<PgResult>>(std::move(outcome));
  if (delivery && delivery->post([done, box] { done(std::move(*box)); })) return;
  done(std::move(*box));
}

// fork(): the standalone pools, whose loop and callback thread the fork handlers hold still across
// fork() so that a child finds their data consistent (and their mutexes free) when it frees them.
struct ForkRegistry {
  std::mutex mutex;
  std::vector<PgPoolState*> pools;
};
ForkRegistry& forkRegistry() {
  static auto* registry = new ForkRegistry;  // never destroyed: fork() may come at any time
  return *registry;
}
void prepareFork() noexcept;
void afterFork() noexcept;

}  // namespace

class PgPoolState {
  static PgPoolConfig configOf(const PostgresOptions& options) {
    PgPoolConfig config{options};
    config.maxInFlight = options.pipelineDepth;
    return config;
  }

 public:
  // Standalone: its own loop and delivery.
  PgPoolState(PostgresOptions options, Logger logger, Executor executor)
      : ownLoop_(std::make_unique<Loop>()),
        loop_(*ownLoop_),
        delivery_(std::make_shared<Delivery>(std::move(executor), logger)),
        options_(checked(std::move(options))),
        core_(std::make_unique<PgPoolCore>(loop_, configOf(options_), std::move(logger))) {
    static std::once_flag handlers;
    std::call_once(handlers, [] { ::pthread_atfork(prepareFork, afterFork, afterFork); });
    std::lock_guard<std::mutex> guard(forkRegistry().mutex);
    forkRegistry().pools.push_back(this);
  }

  // A Client's: its loop and delivery.
  explicit PgPoolState(PgPoolWiring wiring)
      : loop_(wiring.loop), delivery_(std::move(wiring.delivery)), options_(checked(std::move(wiring.options))) {
    PgPoolConfig config = configOf(options_);
    if (wiring.maxInFlight > 0) config.maxInFlight = wiring.maxInFlight;
    config.stallAfter = wiring.stallAfter;
    config.demotions = std::move(wiring.demotions);
    core_ = std::make_unique<PgPoolCore>(loop_, std::move(config), std::move(wiring.logger));
  }

  ~PgPoolState() {
    if (ownLoop_) {
      std::lock_guard<std::mutex> guard(forkRegistry().mutex);
      auto& pools = forkRegistry().pools;
      pools.erase(std::remove(pools.begin(), pools.end(), this), pools.end());
    }
    if (forked()) abandonAfterFork();
    if (abandoned_->load()) return;  // memory only: the members free themselves
    closed_ = true;
    // A pool that never ran a statement has no I/O thread: nothing else can touch the core.
    if (ownLoop_ && !ownLoop_->started()) {
      core_.reset();
      return;
    }
    close();
    if (ownLoop_) {
      ownLoop_->stop();  // joins the I/O thread
      core_.reset();
      delivery_->stop();  // runs the completions still queued
    } else {
      runOnLoop([this] { core_.reset(); });
    }
  }

  PgResult execute(std::string_view sql, const PgParams& params, std::optional<Milliseconds> timeout) {
    if (auto invalid = pgInvalidArguments(sql, params)) throw *invalid;
    if (closed_.load() || forked()) throw shutDownError();
    if (loop_.inLoopThread()) {
      throw Error(ErrorCode::InvalidArgument,
                  "the blocking PgPool::execute was called on the library's I/O thread; use the completion form");
    }
    auto promise = std::make_shared<std::promise<Result<PgResult>>>();
    auto future = promise->get_future();
    PgPoolCore* core = core_.get();
    const bool posted = loop_.post([core, sql = std::string(sql), params, limits = callLimits(timeout), promise]() mutable {
      core->execute(std::move(sql), std::move(params), limits,
                    [promise](Result<PgResult> outcome) { promise->set_value(std::move(outcome)); });
    });
    if (!posted) throw shutDownError();
    std::optional<Result<PgResult>> outcome;
    try {
      outcome.emplace(future.get());
    } catch (const std::future_error&) {
      throw shutDownError();  // the loop stopped with the task still queued
    }
    return std::move(*outcome).value();
  }

  void executeAsync(std::string sql, PgParams params, Completion<Result<PgResult>> done,
                    std::optional<Milliseconds> timeout) noexcept {
    try {
      auto once = std::make_shared<Once>(
          [delivery = delivery_, done = std::move(done)](Result<PgResult> outcome) {
            deliver(delivery, done, std::move(outcome));
          },
          abandoned_);
      if (auto invalid = pgInvalidArguments(sql, params)) return (*once)(std::move(*invalid));
      if (closed_.load() || forked()) return (*once)(shutDownError());
      post(std::move(sql), std::move(params), callLimits(timeout), std::move(once));
    } catch (...) {
      // Out of memory: a Once that was made completes from its destructor.
    }
  }

  void executeOnLoop(std::string sql, PgParams params, StatementLimits limits, PgDone done) noexcept {
    try {
      auto once = std::make_shared<Once>(std::move(done), abandoned_);
      if (closed_.load() || forked()) {
        // On the loop, never inside this call, while it runs.
        if (!forked() && loop_.post([once] { (*once)(shutDownError()); })) return;
        return (*once)(shutDownError());
      }
      post(std::move(sql), std::move(params), limits, std::move(once));
    } catch (...) {
    }
  }

  void close() noexcept {
    closed_ = true;
    if (abandoned_->load() || forked()) return;
    try {
      runOnLoop([core = core_.get()] { core->close(); });
    } catch (...) {
    }
  }

  void abandonAfterFork() noexcept {
    if (abandoned_->exchange(true)) return;
    closed_ = true;
    core_->abandonAfterFork();
    if (ownLoop_) {
      ownLoop_->abandonAfterFork();
      delivery_->abandonAfterFork();
    }
  }

  StatementLimits callLimits(std::optional<Milliseconds> timeout) const noexcept {
    // The documented bound of a call: the pool wait, a connect, the statement (a retry included).
    const Milliseconds statement = std::max(timeout.value_or(options_.statementTimeout), Milliseconds{0});
    const Deadline now = Clock::now();
    const Deadline notAfter =
        saturatingAdd(saturatingAdd(saturatingAdd(now, options_.acquireTimeout), options_.connectTimeout), statement);
    return core_->limits(timeout, notAfter);
  }

  StatementLimits limits(std::optional<Milliseconds> timeout, Deadline notAfter) const noexcept {
    return core_->limits(timeout, notAfter);
  }

  PgPool::Stats stats() const noexcept {
    const auto s = core_->stats();
    PgPool::Stats out;
    out.open = s.open;
    out.idle = s.idle;
    out.inUse = s.inUse;
    out.capacity = s.capacity;
    return out;
  }

  PgPoolCore& core() noexcept { return *core_; }

  // fork() handlers (standalone pools only).
  void lockForFork() noexcept {
    if (loop_.inLoopThread()) return;  // fork() on the loop thread itself: its data is its own
    loop_.workMutex().lock();
    loop_.postMutex().lock();
    delivery_->queueMutex().lock();
    heldForFork_ = true;
  }
  void unlockAfterFork() noexcept {
    if (!heldForFork_) return;
    heldForFork_ = false;
    delivery_->queueMutex().unlock();
    loop_.postMutex().unlock();
    loop_.workMutex().unlock();
  }

 private:
  static PostgresOptions checked(PostgresOptions options) {
    validateOptions(options);
    return options;
  }

  bool forked() const noexcept { return forkEpoch() != forkEpoch_; }

  void post(std::string sql, PgParams params, StatementLimits limits, std::shared_ptr<Once> once) {
    PgPoolCore* core = core_.get();
    Loop::Task task = [core, sql = std::move(sql), params = std::move(params), limits, once]() mutable {
      core->execute(std::move(sql), std::move(params), limits, [once](Result<PgResult> outcome) {
        (*once)(std::move(outcome));
      });
    };
    // Already on the I/O thread (a completion that starts the next statement): at the end of this
    // iteration, without a wake-up through the loop's queue.
    if (loop_.inLoopThread() && !closed_.load()) {
      loop_.atEndOfIteration(std::move(task));
      return;
    }
    if (!loop_.post(std::move(task))) (*once)(shutDownError());
  }

  // Runs task on the loop thread and waits for it; inline when already there, or when the loop no
  // longer runs (stopped, or stopping with the task dropped).
  void runOnLoop(const std::function<void()>& task) {
    if (loop_.inLoopThread()) {
      task();
      return;
    }
    auto ran = std::make_shared<std::promise<void>>();
    auto future = ran->get_future();
    if (loop_.post([&task, ran] {
          task();
          ran->set_value();
        })) {
      try {
        future.get();
        return;
      } catch (const std::future_error&) {
        // Dropped by a stopping loop, whose thread is joined by now.
      }
    }
    task();
  }

  const std::unique_ptr<Loop> ownLoop_;
  Loop& loop_;
  const std::shared_ptr<Delivery> delivery_;
  const PostgresOptions options_;
  std::unique_ptr<PgPoolCore> core_;
  std::atomic<bool> closed_{false};
  const std::shared_ptr<std::atomic<bool>> abandoned_ = std::make_shared<std::atomic<bool>>(false);
  const std::uint64_t forkEpoch_ = forkEpoch();
  bool heldForFork_ = false;
};

namespace {

void prepareFork() noexcept {
  ForkRegistry& registry = forkRegistry();
  registry.mutex.lock();
  for (PgPoolState* pool : registry.pools) pool->lockForFork();
}

void afterFork() noexcept {
  ForkRegistry& registry = forkRegistry();
  for (auto it = registry.pools.rbegin(); it != registry.pools.rend(); ++it) (*it)->unlockAfterFork();
  registry.mutex.unlock();
}

}  // namespace

std::unique_ptr<PgPool> PgPoolAccess::make(PgPoolWiring wiring) {
  return std::unique_ptr<PgPool>(new PgPool(std::make_unique<PgPoolState>(std::move(wiring))));
}

StatementLimits PgPoolAccess::limits(const PgPool& pool, std::optional<Milliseconds> timeout,
                                     Deadline notAfter) noexcept {
  return pool.state_->limits(timeout, notAfter);
}

StatementLimits PgPoolAccess::callLimits(const PgPool& pool, std::optional<Milliseconds> timeout) noexcept {
  return pool.state_->callLimits(timeout);
}

void PgPoolAccess::execute(PgPool& pool, std::string sql, PgParams params, StatementLimits limits,
                           PgDone done) noexcept {
  pool.state_->executeOnLoop(std::move(sql), std::move(params), limits, std::move(done));
}

PgPoolCore& PgPoolAccess::core(PgPool& pool) noexcept { return pool.state_->core(); }

void PgPoolAccess::abandonAfterFork(PgPool& pool) noexcept { pool.state_->abandonAfterFork(); }

}  // namespace detail

PgPool::PgPool(PostgresOptions options, Logger logger)
    : state_(std::make_unique<detail::PgPoolState>(std::move(options), std::move(logger), Executor{})) {}

PgPool::PgPool(PostgresOptions options, Logger logger, Executor executor)
    : state_(std::make_unique<detail::PgPoolState>(std::move(options), std::move(logger), std::move(executor))) {}

PgPool::PgPool(std::unique_ptr<detail::PgPoolState> state) : state_(std::move(state)) {}

PgPool::~PgPool() = default;

PgResult PgPool::execute(std::string_view sql, const PgParams& params, std::optional<Milliseconds> timeout) {
  return state_->execute(sql, params, timeout);
}

void PgPool::execute(std::string sql, PgParams params, Completion<Result<PgResult>> done,
                     std::optional<Milliseconds> timeout) noexcept {
  state_->executeAsync(std::move(sql), std::move(params), std::move(done), timeout);
}

void PgPool::close() noexcept { state_->close(); }

PgPool::Stats PgPool::stats() const { return state_->stats(); }

}  // namespace streamlock
