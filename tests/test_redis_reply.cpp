// Reply interpretation as pure functions, fed RESP bytes through hiredis' redisReader: no server.
#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <vector>

#include "redis_reply.h"
#include "streamlock/error.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::detail::isIntegerOne;
using streamlock::detail::isNoScript;
using streamlock::detail::MgetReaderScope;
using streamlock::detail::MgetReplies;
using streamlock::detail::throwIfError;
using Owners = std::vector<std::string>;  // owners[i]: the lock value of key i, empty for none

namespace {

struct FreeReply {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, FreeReply>;
using Reader = std::unique_ptr<redisReader, decltype(&redisReaderFree)>;

Reader newReader() { return Reader(redisReaderCreate(), &redisReaderFree); }

// The one reply that these RESP bytes encode, built by hiredis' own functions.
Reply parse(redisReader* reader, const std::string& resp) {
  REQUIRE(redisReaderFeed(reader, resp.data(), resp.size()) == REDIS_OK);
  void* reply = nullptr;
  REQUIRE(redisReaderGetReply(reader, &reply) == REDIS_OK);
  REQUIRE(reply != nullptr);
  return Reply(static_cast<redisReply*>(reply));
}

Reply parse(const std::string& resp) { return parse(newReader().get(), resp); }

// Reads one MGET reply for the keys [begin, end) of owners from these bytes, as a connection does:
// a reader stopped by MgetReplies is a ServerError with its reason, a reader that failed by itself
// (a protocol error) a lost connection, and a reply is given to finish().
void readMget(redisReader* reader, const std::string& resp, Owners& owners, std::size_t begin, std::size_t end) {
  MgetReplies replies(owners);
  MgetReaderScope scope(reader, replies);
  replies.expect(begin, end);
  REQUIRE(redisReaderFeed(reader, resp.data(), resp.size()) == REDIS_OK);
  void* reply = nullptr;
  if (redisReaderGetReply(reader, &reply) != REDIS_OK) {
    if (replies.abandoned() == nullptr) throw Error(ErrorCode::ConnectionLost, reader->errstr);
    throw Error(ErrorCode::ServerError, replies.abandoned());
  }
  REQUIRE(reply != nullptr);
  replies.finish(reply);
}

void readMget(const std::string& resp, Owners& owners, std::size_t begin, std::size_t end) {
  readMget(newReader().get(), resp, owners, begin, end);
}

std::string bulk(const std::string& value) { return "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n"; }
const std::string nil = "$-1\r\n";

ErrorCode mgetError(const std::string& resp, const std::vector<std::string>& chats) {
  Owners owners(chats.size());
  try {
    readMget(resp, owners, 0, owners.size());
  } catch (const Error& error) {
    CHECK(owners == Owners(chats.size()));
    return error.code();
  }
  FAIL("the MGET reader accepted " << resp);
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
  Owners owners(2);
  readMget("*2\r\n" + bulk("stream-a") + bulk("stream-b"), owners, 0, 2);
  CHECK(owners == Owners{"stream-a", "stream-b"});
}

TEST_CASE("MGET: nil means no owner", "[unit]") {
  Owners owners(3);
  readMget("*3\r\n" + nil + bulk("stream-b") + nil, owners, 0, 3);
  CHECK(owners == Owners{"", "stream-b", ""});
}

TEST_CASE("MGET: an empty string means no owner", "[unit]") {
  Owners owners(2);
  readMget("*2\r\n" + bulk("") + bulk("stream-b"), owners, 0, 2);
  CHECK(owners == Owners{"", "stream-b"});
}

TEST_CASE("MGET: all nil gives no owners", "[unit]") {
  Owners owners(2);
  readMget("*2\r\n" + nil + nil, owners, 0, 2);
  CHECK(owners == Owners{"", ""});
}

TEST_CASE("MGET: a chunk answers for the keys begin to end and leaves the others", "[unit]") {
  Owners owners{"stream-0", "", "", "", ""};  // position 0 from the previous chunk
  readMget("*2\r\n" + bulk("stream-2") + nil, owners, 2, 4);
  CHECK(owners == Owners{"stream-0", "", "stream-2", "", ""});
}

TEST_CASE("MGET: values are binary-safe strings", "[unit]") {
  const std::string owner = std::string("str\0eam", 7) + " \xc3\xa9";
  Owners owners(1);
  readMget("*1\r\n" + bulk(owner), owners, 0, 1);
  CHECK(owners.at(0) == owner);
}

TEST_CASE("MGET: a reply of the wrong length is a server error", "[unit]") {
  CHECK(mgetError("*1\r\n" + bulk("stream-a"), {"chat-a", "chat-b"}) == ErrorCode::ServerError);
  CHECK(mgetError("*3\r\n" + bulk("a") + bulk("b") + bulk("c"), {"chat-a", "chat-b"}) == ErrorCode::ServerError);
  CHECK(mgetError("*0\r\n", {"chat-a"}) == ErrorCode::ServerError);
}

TEST_CASE("MGET: an array claiming a huge length is refused before anything is allocated", "[unit]") {
  // hiredis alone would allocate the element array of a multi-bulk header as soon as it reads it.
  CHECK(mgetError("*1000000000\r\n", {"chat-a"}) == ErrorCode::ServerError);
  CHECK(mgetError("*2147483647\r\n" + nil, {"chat-a"}) == ErrorCode::ServerError);
}

TEST_CASE("MGET: bytes that are not RESP fail the reader itself", "[unit]") {
  CHECK(mgetError("*-5\r\n", {"chat-a"}) == ErrorCode::ConnectionLost);
  CHECK(mgetError("?what\r\n", {"chat-a"}) == ErrorCode::ConnectionLost);
}

TEST_CASE("MGET: a reply split across reads is read whole", "[unit]") {
  const std::string resp = "*3\r\n" + bulk("stream-a") + nil + bulk("stream-c");
  for (std::size_t cut = 1; cut < resp.size(); ++cut) {
    Reader reader = newReader();
    Owners owners(3);
    MgetReplies replies(owners);
    MgetReaderScope scope(reader.get(), replies);
    replies.expect(0, 3);
    void* reply = nullptr;
    REQUIRE(redisReaderFeed(reader.get(), resp.data(), cut) == REDIS_OK);
    REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
    REQUIRE(reply == nullptr);
    REQUIRE(redisReaderFeed(reader.get(), resp.data() + cut, resp.size() - cut) == REDIS_OK);
    REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
    replies.finish(reply);
    CHECK(owners == Owners{"stream-a", "", "stream-c"});
  }
}

TEST_CASE("MGET: a pipeline of replies, each for its own keys", "[unit]") {
  Reader reader = newReader();
  Owners owners(5);
  MgetReplies replies(owners);
  MgetReaderScope scope(reader.get(), replies);
  const std::string resp = "*2\r\n" + bulk("s0") + nil + "-ERR no\r\n" + "*1\r\n" + bulk("s4");
  REQUIRE(redisReaderFeed(reader.get(), resp.data(), resp.size()) == REDIS_OK);
  void* reply = nullptr;
  replies.expect(0, 2);
  REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
  replies.finish(reply);
  replies.expect(2, 4);
  REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
  CHECK_THROWS_AS(replies.finish(reply), Error);
  replies.expect(4, 5);
  REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
  replies.finish(reply);
  CHECK(owners == Owners{"s0", "", "", "", "s4"});
}

TEST_CASE("MGET: the reader builds hiredis replies again once the scope ends", "[unit]") {
  Reader reader = newReader();
  Owners owners(1);
  readMget(reader.get(), "*1\r\n" + bulk("stream-a"), owners, 0, 1);
  CHECK(owners == Owners{"stream-a"});
  const Reply reply = parse(reader.get(), "*1\r\n" + bulk("x"));
  REQUIRE(reply->type == REDIS_REPLY_ARRAY);
  REQUIRE(reply->elements == 1);
  CHECK(std::string(reply->element[0]->str, reply->element[0]->len) == "x");
}

TEST_CASE("MGET: a reader stopped mid-reply forgets the half-read reply", "[unit]") {
  // Freed with hiredis' own functions restored: a half-read MGET reply must not reach them.
  Reader reader = newReader();
  Owners owners(3);
  {
    MgetReplies replies(owners);
    MgetReaderScope scope(reader.get(), replies);
    replies.expect(0, 3);
    const std::string partial = "*3\r\n" + bulk("stream-a");
    REQUIRE(redisReaderFeed(reader.get(), partial.data(), partial.size()) == REDIS_OK);
    void* reply = nullptr;
    REQUIRE(redisReaderGetReply(reader.get(), &reply) == REDIS_OK);
    CHECK(reply == nullptr);
  }
  CHECK(owners == Owners{"stream-a", "", ""});
  reader.reset();  // would crash (or ASan would report) if the reader still held the half reply
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
