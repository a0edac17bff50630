#pragma once

// A tiny blocking hiredis client for the tests' own assertions (argv form only).

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct redisContext;
struct redisReply;

namespace streamlock::test {

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept;
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class TestRedis {
 public:
  // url: redis://host:port[/db] (no credentials: the tests' own connection is the default user).
  explicit TestRedis(const std::string& url);
  TestRedis(const std::string& host, int port, int db = 0);
  ~TestRedis();
  TestRedis(const TestRedis&) = delete;
  TestRedis& operator=(const TestRedis&) = delete;

  // Sends one command; throws on an I/O error. The reply may be an error reply.
  Reply command(const std::vector<std::string>& argv);
  // Sends one command and throws when the reply is an error reply.
  Reply ok(const std::vector<std::string>& argv);
  // Sends every command in one write, then reads the replies in order, calling check on each with
  // its command (one round trip however many). Throws on an I/O error.
  void pipeline(const std::vector<std::vector<std::string>>& commands,
                const std::function<void(const redisReply*, const std::vector<std::string>&)>& check);

  // Sends one command that answers an integer.
  long long integer(const std::vector<std::string>& argv);

  std::optional<std::string> get(const std::string& key);
  void set(const std::string& key, const std::string& value);
  void setPx(const std::string& key, const std::string& value, long long milliseconds);
  // Sets every pair in one MSET.
  void mset(const std::vector<std::pair<std::string, std::string>>& pairs);
  // One MGET; nullopt for a missing key.
  std::vector<std::optional<std::string>> mget(const std::vector<std::string>& keys);
  long long del(const std::string& key);
  bool exists(const std::string& key);
  // -2 when the key is missing, -1 without TTL.
  long long pttl(const std::string& key);
  // Makes the key expire now-ish (PEXPIRE 1) and waits until Redis no longer has it.
  void expireNow(const std::string& key);
  // Keys matching a pattern (KEYS: fine on the small test databases).
  std::vector<std::string> keys(const std::string& pattern);

  // INFO commandstats: command name (lowercase) -> calls.
  std::map<std::string, long long> commandCalls();
  // Calls of one command, 0 when never called.
  long long calls(const std::string& command);
  // Calls of every command except INFO (which the tests themselves send).
  long long callsExceptInfo();
  // A numeric field of an INFO section, e.g. ("stats", "keyspace_hits").
  long long infoField(const std::string& section, const std::string& field);

 private:
  void connect(const std::string& host, int port, int db);
  redisContext* context_ = nullptr;
  std::string where_;
};

}  // namespace streamlock::test
