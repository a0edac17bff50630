// Reply interpretation as pure functions, fed RESP bytes through hiredis' redisReader: no server.
#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <vector>
#include <vector>

#include "redis_reply.h"
#include "streamlock/error.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::detail::interpretMgetReply;
using streamlock::detail::isIntegerOne;
using streamlock::detail::isNoScript;
using streamlock::detail::throwIfError;
using Owners = std::vector<std::string>;  // owners[i]: the lock value of key i, empty for none

namespace {

struct FreeReply {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;

// The one reply that these RESP bytes encode.
Reply parse(const std::string& resp) {
  std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader(redisReaderCreate(), &redisReaderFree);
  REQUIRE(redisReaderFeed(reader.get(), resp.data(), resp.size()) == REDIS_OK);
  void* reply = nullptr;
  REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
  REQUIRE(reply != nullptr);
  return Reply(static_cast<redisReply*>(reply));
}

std::string bulk(const std::string& value) { return "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n"; }
const std::string nil = "$-1\r\n";

ErrorCode mgetError(const std::string& resp, const std::vector<std::string>& chats) {
  const Reply reply = parse(resp);
  Owners owners(chats.size());
  try {
    interpretMgetReply(reply.get(), 0, owners.size(), owners);
  } catch (const Error& error) {
    return error.code();
  }
  FAIL("interpretMgetReply accepted " << resp);
  return ErrorCode::InvalidArgument;
}

ErrorCode errorOf(const redisReply* reply) {
  try {
    throwIfError(reply);
  } catch (const Error& error) {
    return error.code();
  }
  FAIL("throwIfError did not throw");
  return ErrorCode::InvalidArgument;
}

}  // namespace

TEST_CASE("MGET: a string value is the owner of the key at its position", "[unit]") {
  const Reply reply = parse("*2\r\n" + bulk("stream-a") + bulk("stream-b"));
  Owners owners(2);
  interpretMgetReply(reply.get(), 0, 2, owners);
  CHECK(owners == Owners{"stream-a", "stream-b"});
}

TEST_CASE("MGET: nil means no owner", "[unit]") {
  const Reply reply = parse("*3\r\n" + nil + bulk("stream-b") + nil);
  Owners owners(3);
  interpretMgetReply(reply.get(), 0, 3, owners);
  CHECK(owners == Owners{"", "stream-b", ""});
}

TEST_CASE("MGET: an empty string means no owner", "[unit]") {
  const Reply reply = parse("*2\r\n" + bulk("") + bulk("stream-b"));
  Owners owners(2);
  interpretMgetReply(reply.get(), 0, 2, owners);
  CHECK(owners == Owners{"", "stream-b"});
}

TEST_CASE("MGET: all nil gives no owners", "[unit]") {
  const Reply reply = parse("*2\r\n" + nil + nil);
  Owners owners(2);
  interpretMgetReply(reply.get(), 0, 2, owners);
  CHECK(owners == Owners{"", ""});
}

TEST_CASE("MGET: a chunk answers for the keys begin to end and leaves the others", "[unit]") {
  Owners owners{"stream-0", "", "", "", ""};  // position 0 from the previous chunk
  const Reply reply = parse("*2\r\n" + bulk("stream-2") + nil);
  interpretMgetReply(reply.get(), 2, 4, owners);
  CHECK(owners == Owners{"stream-0", "", "stream-2", "", ""});
}

TEST_CASE("MGET: values are binary-safe strings", "[unit]") {
  const std::string owner = std::string("str\0eam", 7) + " \xc3\xa9";
  const Reply reply = parse("*1\r\n" + bulk(owner));
  Owners owners(1);
  interpretMgetReply(reply.get(), 0, 1, owners);
  CHECK(owners.at(0) == owner);
}

TEST_CASE("MGET: a reply of the wrong length is a server error", "[unit]") {
  CHECK(mgetError("*1\r\n" + bulk("stream-a"), {"chat-a", "chat-b"}) == ErrorCode::ServerError);
  CHECK(mgetError("*3\r\n" + bulk("a") + bulk("b") + bulk("c"), {"chat-a", "chat-b"}) == ErrorCode::ServerError);
  CHECK(mgetError("*0\r\n", {"chat-a"}) == ErrorCode::ServerError);
}

TEST_CASE("MGET: a reply of the wrong type is a server error", "[unit]") {
  CHECK(mgetError(":1\r\n", {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError("+OK\r\n", {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError(bulk("stream-a"), {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError(nil, {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError("*1\r\n:5\r\n", {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError("*1\r\n*1\r\n" + bulk("x"), {"chat-a"}) == ErrorCode::ServerError);
}

TEST_CASE("MGET: an error reply is a server error", "[unit]") {
  CHECK(mgetError("-ERR unknown command 'MGET'\r\n", {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError("-NOPERM this user has no permissions to run the 'mget' command\r\n", {"chat-a"}) ==
        ErrorCode::ServerError);
  CHECK(mgetError("-LOADING Redis is loading the dataset in memory\r\n", {"chat-a"}) == ErrorCode::ServerError);
}

TEST_CASE("MGET: Redis Cluster answers are unsupported", "[unit]") {
  CHECK(mgetError("-MOVED 3999 127.0.0.1:6381\r\n", {"chat-a"}) == ErrorCode::Unsupported);
  CHECK(mgetError("-ASK 3999 127.0.0.1:6381\r\n", {"chat-a"}) == ErrorCode::Unsupported);
  CHECK(mgetError("-CROSSSLOT Keys in request don't hash to the same slot\r\n", {"chat-a", "chat-b"}) ==
        ErrorCode::Unsupported);
}

TEST_CASE("throwIfError: accepts replies that are not errors", "[unit]") {
  CHECK_NOTHROW(throwIfError(parse("+OK\r\n").get()));
  CHECK_NOTHROW(throwIfError(parse(":0\r\n").get()));
  CHECK_NOTHROW(throwIfError(parse(nil).get()));
  CHECK_NOTHROW(throwIfError(parse("*1\r\n" + bulk("x")).get()));
}

TEST_CASE("throwIfError: error replies, cluster errors and no reply", "[unit]") {
  CHECK(errorOf(parse("-ERR wrong number of arguments\r\n").get()) == ErrorCode::ServerError);
  CHECK(errorOf(parse("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n").get()) ==
        ErrorCode::ServerError);
  CHECK(errorOf(parse("-MOVED 12182 10.0.0.3:6379\r\n").get()) == ErrorCode::Unsupported);
  CHECK(errorOf(parse("-ASK 12182 10.0.0.3:6379\r\n").get()) == ErrorCode::Unsupported);
  CHECK(errorOf(parse("-CROSSSLOT Keys in request don't hash to the same slot\r\n").get()) ==
        ErrorCode::Unsupported);
  CHECK(errorOf(nullptr) == ErrorCode::ConnectionLost);
}

TEST_CASE("isIntegerOne: only the integer 1", "[unit]") {
  CHECK(isIntegerOne(parse(":1\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(":0\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(":2\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse("+1\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(bulk("1")).get()));
  CHECK_FALSE(isIntegerOne(parse(nil).get()));
  CHECK_FALSE(isIntegerOne(nullptr));
}

TEST_CASE("isNoScript: only the NOSCRIPT error", "[unit]") {
  CHECK(isNoScript(parse("-NOSCRIPT No matching script. Please use EVAL.\r\n").get()));
  CHECK_FALSE(isNoScript(parse("-ERR Error running script\r\n").get()));
  CHECK_FALSE(isNoScript(parse(bulk("NOSCRIPT")).get()));
  CHECK_FALSE(isNoScript(parse("+NOSCRIPT\r\n").get()));
  CHECK_FALSE(isNoScript(parse(":1\r\n").get()));
  CHECK_FALSE(isNoScript(nullptr));
}
