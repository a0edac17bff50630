#include "client/pg_bridge.h"

#include <algorithm>
#include <thread>

namespace streamlock::detail {

std::unique_ptr<PgPool> makeClientPgPool(Loop&, std::shared_ptr<Delivery>, PostgresOptions options, Logger logger) {
  return std::make_unique<PgPool>(std::move(options), std::move(logger));
}

void abandonPgPoolAfterFork(PgPool&) noexcept {}

void executeOnLoop(Loop& loop, PgPool& pool, std::string sql, PgParams params, StatementLimits limits,
                   std::function<void(Result<PgResult>)> done) {
  auto timeout = limits.timeout;
  if (limits.notAfter != Deadline::max()) {
    timeout = std::min(timeout, std::chrono::duration_cast<std::chrono::milliseconds>(limits.notAfter - Clock::now()));
    if (timeout <= std::chrono::milliseconds{0}) timeout = std::chrono::milliseconds{1};
  }
  std::thread([&loop, &pool, sql = std::move(sql), params = std::move(params), timeout, done = std::move(done)]() mutable {
    auto result = std::make_shared<std::optional<Result<PgResult>>>();
    try {
      result->emplace(pool.execute(sql, params, timeout));
    } catch (const Error& e) {
      result->emplace(e);
    } catch (const std::exception& e) {
      result->emplace(Error(ErrorCode::ConnectionLost, e.what()));
    }
    loop.post([result, done = std::move(done)] { done(std::move(**result)); });
  }).detach();
}

}  // namespace streamlock::detail
