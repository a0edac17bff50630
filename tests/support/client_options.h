#pragma once

#include <string>

#include "capture_log.h"
#include "streamlock/options.h"

namespace streamlock::test {

class ChatsTable;

// Options of a Client on this Redis URL (empty: no Redis), with a unique key prefix and the
// library's log captured. No PostgreSQL unless the test adds it.
Options clientOptions(const std::string& redisUrl, CapturedLog& log);

// The same, on the test database, repairing the markers of chats: a Client that can repair.
Options clientOptions(const std::string& redisUrl, CapturedLog& log, const ChatsTable& chats);

// The lock key of a chat under these options.
std::string lockKey(const Options& options, const std::string& chatId);

}  // namespace streamlock::test
