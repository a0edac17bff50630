#pragma once

#include <string>

#include "capture_log.h"
#include "streamlock/options.h"

namespace streamlock::test {

// Options of a Client on this Redis URL (empty: no Redis), with a unique key prefix and the
// library's log captured. No PostgreSQL unless the test adds it.
Options clientOptions(const std::string& redisUrl, CapturedLog& log);

// The lock key of a chat under these options.
std::string lockKey(const Options& options, const std::string& chatId);

}  // namespace streamlock::test
