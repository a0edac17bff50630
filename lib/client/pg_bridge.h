#pragma once

// How the Client drives its PostgreSQL pools from the I/O thread.
// INTERIM: until the asynchronous pool lands (lib/pg/), statements run on a short-lived thread
// with the blocking pool and their results are posted back to the loop.

#include <functional>
#include <memory>
#include <string>

#include "client/delivery.h"
#include "io/clock.h"
#include "io/loop.h"
#include "streamlock/completion.h"
#include "streamlock/postgres.h"

namespace streamlock::detail {

struct StatementLimits {
  Deadline acquireBy = Deadline::max();                 // latest time to get a connection
  std::chrono::milliseconds timeout{5000};              // the statement's own deadline once sent
  Deadline notAfter = Deadline::max();                  // hard bound of the whole call
};

std::unique_ptr<PgPool> makeClientPgPool(Loop& loop, std::shared_ptr<Delivery> delivery, PostgresOptions options,
                                         Logger logger);
void abandonPgPoolAfterFork(PgPool& pool) noexcept;
// Loop thread: runs the statement; done runs on the loop thread.
void executeOnLoop(Loop& loop, PgPool& pool, std::string sql, PgParams params, StatementLimits limits,
                   std::function<void(Result<PgResult>)> done);

}  // namespace streamlock::detail
