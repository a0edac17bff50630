#include "client_options.h"

#include "env.h"

namespace streamlock::test {

Options clientOptions(const std::string& redisUrl, CapturedLog& log) {
  Options options;
  options.redis.url = redisUrl;
  options.lock.keyPrefix = uniquePrefix();
  options.logger = log.logger();
  return options;
}

std::string lockKey(const Options& options, const std::string& chatId) { return options.lock.keyPrefix + chatId; }

}  // namespace streamlock::test
