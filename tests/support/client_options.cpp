#include "client_options.h"

#include "env.h"
#include "pg.h"

namespace streamlock::test {

Options clientOptions(const std::string& redisUrl, CapturedLog& log) {
  Options options;
  options.redis.url = redisUrl;
  options.lock.keyPrefix = uniquePrefix();
  options.logger = log.logger();
  return options;
}

Options clientOptions(const std::string& redisUrl, CapturedLog& log, const ChatsTable& chats) {
  Options options = clientOptions(redisUrl, log);
  options.postgres.conninfo = databaseUrl();
  options.repair.table = chats.name();
  return options;
}

std::string lockKey(const Options& options, const std::string& chatId) { return options.lock.keyPrefix + chatId; }

}  // namespace streamlock::test
