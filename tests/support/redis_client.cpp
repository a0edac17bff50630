#include "redis_client.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <sstream>
#include <stdexcept>

#include "env.h"

namespace streamlock::test {

void ReplyDeleter::operator()(redisReply* reply) const noexcept {
  if (reply != nullptr) freeReplyObject(reply);
}

namespace {

std::string replyText(const redisReply* reply) {
  if (reply == nullptr) return "(no reply)";
  if (reply->str != nullptr) return std::string(reply->str, reply->len);
  return "(reply type " + std::to_string(reply->type) + ")";
}

}  // namespace

TestRedis::TestRedis(const std::string& url) {
  const std::string scheme = "redis://";
  if (url.compare(0, scheme.size(), scheme) != 0) throw std::runtime_error("TestRedis: not a redis:// URL: " + url);
  std::string rest = url.substr(scheme.size());
  int db = 0;
  if (const auto slash = rest.find('/'); slash != std::string::npos) {
    if (slash + 1 < rest.size()) db = std::stoi(rest.substr(slash + 1));
    rest.resize(slash);
  }
  if (rest.find('@') != std::string::npos) throw std::runtime_error("TestRedis: credentials are not supported: " + url);
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("TestRedis: URL without a port: " + url);
  connect(rest.substr(0, colon), std::stoi(rest.substr(colon + 1)), db);
}

TestRedis::TestRedis(const std::string& host, int port, int db) { connect(host, port, db); }

void TestRedis::connect(const std::string& host, int port, int db) {
  where_ = host + ":" + std::to_string(port);
  timeval timeout{};
  timeout.tv_sec = 10;
  context_ = redisConnectWithTimeout(host.c_str(), port, timeout);
  if (context_ == nullptr || context_->err != 0) {
    const std::string why = context_ != nullptr ? context_->errstr : "out of memory";
    if (context_ != nullptr) redisFree(context_);
    context_ = nullptr;
    throw std::runtime_error("TestRedis: cannot connect to " + where_ + ": " + why);
  }
  redisSetTimeout(context_, timeout);
  if (db != 0) ok({"SELECT", std::to_string(db)});
}

TestRedis::~TestRedis() {
  if (context_ != nullptr) redisFree(context_);
}

Reply TestRedis::command(const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
  for (const auto& arg : argv) {
    args.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  Reply reply(static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(args.size()), args.data(), lengths.data())));
  if (!reply) {
    throw std::runtime_error("TestRedis: " + (argv.empty() ? std::string("?") : argv.front()) + " on " + where_ +
                             " failed: " + context_->errstr);
  }
  return reply;
}

void TestRedis::pipeline(const std::vector<std::vector<std::string>>& commands,
                         const std::function<void(const redisReply*, const std::vector<std::string>&)>& check) {
  for (const auto& argv : commands) {
    std::vector<const char*> args;
    std::vector<std::size_t> lengths;
    for (const auto& arg : argv) {
      args.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    if (redisAppendCommandArgv(context_, static_cast<int>(args.size()), args.data(), lengths.data()) != REDIS_OK) {
      throw std::runtime_error("TestRedis: cannot queue a command for " + where_);
    }
  }
  for (const auto& argv : commands) {
    void* raw = nullptr;
    if (redisGetReply(context_, &raw) != REDIS_OK || raw == nullptr) {
      throw std::runtime_error("TestRedis: pipeline on " + where_ + " failed: " + context_->errstr);
    }
    const Reply reply(static_cast<redisReply*>(raw));
    check(reply.get(), argv);
  }
}

Reply TestRedis::ok(const std::vector<std::string>& argv) {
  Reply reply = command(argv);
  if (reply->type == REDIS_REPLY_ERROR) {
    throw std::runtime_error("TestRedis: " + argv.front() + " answered " + replyText(reply.get()));
  }
  return reply;
}

long long TestRedis::integer(const std::vector<std::string>& argv) {
  const Reply reply = ok(argv);
  if (reply->type != REDIS_REPLY_INTEGER) throw std::runtime_error("TestRedis: " + argv.front() + " did not answer an integer");
  return reply->integer;
}

std::optional<std::string> TestRedis::get(const std::string& key) {
  const Reply reply = ok({"GET", key});
  if (reply->type == REDIS_REPLY_NIL) return std::nullopt;
  return std::string(reply->str, reply->len);
}

void TestRedis::set(const std::string& key, const std::string& value) { ok({"SET", key, value}); }

void TestRedis::setPx(const std::string& key, const std::string& value, long long milliseconds) {
  ok({"SET", key, value, "PX", std::to_string(milliseconds)});
}

void TestRedis::mset(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::vector<std::string> argv{"MSET"};
  for (const auto& [key, value] : pairs) {
    argv.push_back(key);
    argv.push_back(value);
  }
  ok(argv);
}

std::vector<std::optional<std::string>> TestRedis::mget(const std::vector<std::string>& keys) {
  std::vector<std::string> argv{"MGET"};
  argv.insert(argv.end(), keys.begin(), keys.end());
  const Reply reply = ok(argv);
  std::vector<std::optional<std::string>> values;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    const redisReply* element = reply->element[i];
    if (element->type == REDIS_REPLY_STRING) {
      values.emplace_back(std::string(element->str, element->len));
    } else {
      values.emplace_back(std::nullopt);
    }
  }
  return values;
}

long long TestRedis::del(const std::string& key) { return integer({"DEL", key}); }

bool TestRedis::exists(const std::string& key) { return integer({"EXISTS", key}) == 1; }

long long TestRedis::pttl(const std::string& key) { return integer({"PTTL", key}); }

void TestRedis::expireNow(const std::string& key) {
  ok({"PEXPIRE", key, "1"});
  // EXISTS expires the key on access once its millisecond has passed.
  if (!waitUntil([&] { return !exists(key); })) throw std::runtime_error("TestRedis: " + key + " did not expire");
}

std::vector<std::string> TestRedis::keys(const std::string& pattern) {
  const Reply reply = ok({"KEYS", pattern});
  std::vector<std::string> result;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    result.emplace_back(reply->element[i]->str, reply->element[i]->len);
  }
  return result;
}

std::map<std::string, long long> TestRedis::commandCalls() {
  const Reply reply = ok({"INFO", "commandstats"});
  std::istringstream lines(std::string(reply->str, reply->len));
  std::map<std::string, long long> calls;
  std::string line;
  // cmdstat_mget:calls=3,usec=12,usec_per_call=4.00,rejected_calls=0,failed_calls=0
  const std::string prefix = "cmdstat_";
  while (std::getline(lines, line)) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    const auto colon = line.find(':');
    const auto callsAt = line.find("calls=", colon);
    if (colon == std::string::npos || callsAt == std::string::npos) continue;
    calls[line.substr(prefix.size(), colon - prefix.size())] = std::stoll(line.substr(callsAt + 6));
  }
  return calls;
}

long long TestRedis::calls(const std::string& command) {
  const auto all = commandCalls();
  const auto found = all.find(command);
  return found == all.end() ? 0 : found->second;
}

long long TestRedis::callsExceptInfo() {
  long long total = 0;
  for (const auto& [name, count] : commandCalls()) {
    if (name != "info") total += count;
  }
  return total;
}

long long TestRedis::infoField(const std::string& section, const std::string& field) {
  const Reply reply = ok({"INFO", section});
  std::istringstream lines(std::string(reply->str, reply->len));
  std::string line;
  const std::string wanted = field + ":";
  while (std::getline(lines, line)) {
    if (line.compare(0, wanted.size(), wanted) == 0) return std::stoll(line.substr(wanted.size()));
  }
  throw std::runtime_error("TestRedis: INFO " + section + " has no field " + field);
}

}  // namespace streamlock::test
