// RESP in and out without I/O (lib/redis/resp.h, private): how commands are encoded, how bytes
// from the server become replies (hiredis' reader behind ReplyReader), and how the replies are
// read. No server. The RESP bytes of the replies are written out by hand, as a server sends them.
#define CATCH_CONFIG_ENABLE_ALL_STRINGMAKERS
#include <catch2/catch.hpp>

#include <hiredis/hiredis.h>

#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "redis/resp.h"
#include "streamlock/error.h"

using streamlock::Error;
using streamlock::ErrorCode;
using streamlock::detail::appendCommand;
using streamlock::detail::appendMgets;
using streamlock::detail::isIntegerOne;
using streamlock::detail::isNil;
using streamlock::detail::isNoScript;
using streamlock::detail::isStatusOk;
using streamlock::detail::readMgetReply;
using streamlock::detail::Reply;
using streamlock::detail::ReplyReader;
using Owners = std::vector<std::string>;  // owners[i]: the lock value of key i, empty for none
using Strings = std::vector<std::string>;
using namespace std::string_literals;

namespace {

std::string bulk(const std::string& value) { return "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n"; }
const std::string nil = "$-1\r\n";

// The one reply these bytes encode, read by the library's own reader.
Reply parse(const std::string& resp) {
  ReplyReader reader;
  reader.feed(resp.data(), resp.size());
  Reply reply = reader.next();
  REQUIRE(reply);
  CHECK_FALSE(reader.next());  // exactly one reply
  return reply;
}

// Every reply these bytes encode, in order.
std::vector<Reply> parseAll(const std::string& resp) {
  ReplyReader reader;
  reader.feed(resp.data(), resp.size());
  std::vector<Reply> replies;
  while (Reply reply = reader.next()) replies.push_back(std::move(reply));
  return replies;
}

// The strings of an array reply (as a server reads a command: an array of bulk strings).
Strings arrayOfStrings(const streamlock::detail::ReplyValue* reply) {
  REQUIRE(reply != nullptr);
  REQUIRE(reply->type == REDIS_REPLY_ARRAY);
  Strings out;
  for (std::size_t i = 0; i < reply->elements; ++i) {
    REQUIRE(reply->element[i]->type == REDIS_REPLY_STRING);
    out.emplace_back(reply->element[i]->str, reply->element[i]->len);
  }
  return out;
}

// The one reply these bytes encode, read with the MGET sink armed for count values (as the
// connection reads a lookup's answer), into owners.
Reply parseSunk(const std::string& resp, std::size_t count, Owners& owners) {
  ReplyReader reader;
  reader.expectMget(owners.data(), count);
  reader.feed(resp.data(), resp.size());
  Reply reply = reader.next();
  REQUIRE(reply);
  reader.expectMget(nullptr, 0);
  CHECK_FALSE(reader.next());
  return reply;
}

// The code of the Error that reading this MGET reply throws, the same whether its values were
// read into reply values or straight into the owners (the sink).
ErrorCode mgetError(const std::string& resp, std::size_t count) {
  ErrorCode codes[2] = {ErrorCode::InvalidArgument, ErrorCode::InvalidArgument};
  for (const bool sunk : {false, true}) {
    Owners owners(count);
    const Reply reply = sunk ? parseSunk(resp, count, owners) : parse(resp);
    try {
      readMgetReply(reply.get(), count, owners.data());
      FAIL("readMgetReply accepted " << resp << (sunk ? " (sunk)" : ""));
    } catch (const Error& error) {
      codes[sunk ? 1 : 0] = error.code();
    }
  }
  CHECK(codes[0] == codes[1]);
  return codes[0];
}

// The owners an MGET reply gives, checked to be the same through the sink.
Owners readMget(const std::string& resp, std::size_t count) {
  const Reply reply = parse(resp);
  Owners owners(count);
  readMgetReply(reply.get(), count, owners.data());
  Owners sunkOwners(count);
  const Reply sunk = parseSunk(resp, count, sunkOwners);
  CHECK(sunk->sunkOwners == sunkOwners.data());
  readMgetReply(sunk.get(), count, sunkOwners.data());
  CHECK(sunkOwners == owners);
  return owners;
}

// The error the reader throws for these bytes, after the replies before the bad bytes.
struct Refusal {
  std::size_t repliesBefore = 0;
  std::optional<Error> error;
};
Refusal refusal(const std::string& resp) {
  Refusal out;
  ReplyReader reader;
  try {
    reader.feed(resp.data(), resp.size());
    while (reader.next()) ++out.repliesBefore;
  } catch (const Error& error) {
    out.error = error;
  }
  return out;
}

}  // namespace

// --- appendCommand -----------------------------------------------------------------------------------

TEST_CASE("appendCommand: an array of bulk strings, byte for byte", "[unit]") {
  std::string out;
  appendCommand(out, {"SET", "key", "value"});
  CHECK(out == "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n");

  std::string fromVector;
  appendCommand(fromVector, std::vector<std::string_view>{"SET", "key", "value"});
  CHECK(fromVector == out);
}

TEST_CASE("appendCommand: appends, so that a pipeline is commands one after the other", "[unit]") {
  std::string out;
  appendCommand(out, {"PING"});
  appendCommand(out, {"GET", "k"});
  CHECK(out == "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
}

TEST_CASE("appendCommand: binary-safe, NUL and CRLF inside an argument stay inside it", "[unit]") {
  const std::string tricky("a\0b\r\nc", 6);
  const std::string empty;
  std::string out;
  appendCommand(out, {"SET", tricky, empty});
  const char expected[] = "*3\r\n$3\r\nSET\r\n$6\r\na\0b\r\nc\r\n$0\r\n\r\n";
  CHECK(out == std::string(expected, sizeof expected - 1));
  // What a server reads back is the same three arguments.
  CHECK(arrayOfStrings(parse(out).get()) == Strings{"SET", tricky, empty});
}

TEST_CASE("appendCommand: a long argument gets its exact length", "[unit]") {
  const std::string value(100000, 'x');
  std::string out;
  appendCommand(out, {"SET", "k", value});
  CHECK(arrayOfStrings(parse(out).get()) == Strings{"SET", "k", value});
}

// --- appendMgets -------------------------------------------------------------------------------------

TEST_CASE("appendMgets: one MGET of the prefixed keys, byte for byte", "[unit]") {
  const std::string a = "a", bc = "bc";
  std::string out = "before";
  CHECK(appendMgets(out, "p:", {&a, &bc}, 1000) == 1);
  CHECK(out == "before*3\r\n$4\r\nMGET\r\n$3\r\np:a\r\n$4\r\np:bc\r\n");
}

TEST_CASE("appendMgets: at most chunk keys per MGET, in order", "[unit]") {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back("chat-" + std::to_string(i));
  std::vector<const std::string*> pointers;
  for (const auto& id : ids) pointers.push_back(&id);

  std::string out;
  CHECK(appendMgets(out, "p:", pointers, 2) == 3);
  const auto commands = parseAll(out);
  REQUIRE(commands.size() == 3);
  CHECK(arrayOfStrings(commands[0].get()) == Strings{"MGET", "p:chat-0", "p:chat-1"});
  CHECK(arrayOfStrings(commands[1].get()) == Strings{"MGET", "p:chat-2", "p:chat-3"});
  CHECK(arrayOfStrings(commands[2].get()) == Strings{"MGET", "p:chat-4"});

  std::string exact;
  CHECK(appendMgets(exact, "p:", pointers, 5) == 1);
  std::string one;
  CHECK(appendMgets(one, "p:", pointers, 0) == 5);  // chunk 0 is taken as 1
  CHECK(parseAll(one).size() == 5);
}

TEST_CASE("appendMgets: 2,500 keys in chunks of 1,000 are MGETs of 1,000, 1,000 and 500 keys", "[unit]") {
  std::vector<std::string> ids;
  for (int i = 0; i < 2500; ++i) ids.push_back(std::to_string(i));
  std::vector<const std::string*> pointers;
  for (const auto& id : ids) pointers.push_back(&id);
  std::string out;
  CHECK(appendMgets(out, "k:", pointers, 1000) == 3);
  const auto commands = parseAll(out);
  REQUIRE(commands.size() == 3);
  CHECK(commands[0]->elements == 1001);
  CHECK(commands[1]->elements == 1001);
  CHECK(commands[2]->elements == 501);
  CHECK(arrayOfStrings(commands[2].get()).back() == "k:2499");
}

TEST_CASE("appendMgets: no ids, no command and nothing appended", "[unit]") {
  std::string out = "x";
  CHECK(appendMgets(out, "p:", {}, 1000) == 0);
  CHECK(out == "x");
}

TEST_CASE("appendMgets: binary-safe ids", "[unit]") {
  const std::string id("a\0\r\n", 4);
  std::string out;
  CHECK(appendMgets(out, "p:", {&id}, 10) == 1);
  CHECK(arrayOfStrings(parse(out).get()) == Strings{"MGET", "p:" + id});
}

// --- ReplyReader -------------------------------------------------------------------------------------

TEST_CASE("ReplyReader: nothing fed, no reply, and an incomplete reply is no reply yet", "[unit]") {
  ReplyReader reader;
  CHECK_FALSE(reader.next());
  reader.feed("*2\r\n$3\r\nab", 10);
  CHECK_FALSE(reader.next());
  reader.feed("c\r\n$-1\r\n", 9);
  const Reply reply = reader.next();
  REQUIRE(reply);
  REQUIRE(reply->type == REDIS_REPLY_ARRAY);
  REQUIRE(reply->elements == 2);
  CHECK(std::string(reply->element[0]->str, reply->element[0]->len) == "abc");
  CHECK(reply->element[1]->type == REDIS_REPLY_NIL);
}

TEST_CASE("ReplyReader: a pipeline of replies split across two feeds at every byte position", "[unit]") {
  const std::string resp = "*3\r\n" + bulk("stream-a") + nil + bulk("") + "+OK\r\n" + ":1\r\n" + nil +
                           "-NOSCRIPT No matching script\r\n" + bulk(std::string("x\0y", 3));
  for (std::size_t cut = 0; cut <= resp.size(); ++cut) {
    INFO("cut at byte " << cut);
    ReplyReader reader;
    std::vector<Reply> replies;
    reader.feed(resp.data(), cut);
    while (Reply reply = reader.next()) replies.push_back(std::move(reply));
    reader.feed(resp.data() + cut, resp.size() - cut);
    while (Reply reply = reader.next()) replies.push_back(std::move(reply));
    REQUIRE(replies.size() == 6);
    Owners owners(3);
    readMgetReply(replies[0].get(), 3, owners.data());
    CHECK(owners == Owners{"stream-a", "", ""});
    CHECK(isStatusOk(replies[1].get()));
    CHECK(isIntegerOne(replies[2].get()));
    CHECK(isNil(replies[3].get()));
    CHECK(isNoScript(replies[4].get()));
    REQUIRE(replies[5]->type == REDIS_REPLY_STRING);
    CHECK(std::string(replies[5]->str, replies[5]->len) == std::string("x\0y", 3));
  }
}

TEST_CASE("ReplyReader: a reply fed one byte at a time", "[unit]") {
  const std::string resp = "*2\r\n" + bulk("stream-a") + bulk("stream-b");
  ReplyReader reader;
  Reply reply;
  for (std::size_t i = 0; i < resp.size(); ++i) {
    CHECK_FALSE(reply);
    reader.feed(resp.data() + i, 1);
    reply = reader.next();
  }
  REQUIRE(reply);
  Owners owners(2);
  readMgetReply(reply.get(), 2, owners.data());
  CHECK(owners == Owners{"stream-a", "stream-b"});
}

TEST_CASE("ReplyReader: bytes that are not RESP are Error(ConnectionLost)", "[unit]") {
  for (const std::string bad : {"?what\r\n", "!\r\n", "hello\r\n"}) {
    INFO(bad);
    ReplyReader reader;
    ErrorCode code = ErrorCode::InvalidArgument;
    try {
      reader.feed(bad.data(), bad.size());
      (void)reader.next();
      FAIL("the reader accepted " << bad);
    } catch (const Error& error) {
      code = error.code();
    }
    CHECK(code == ErrorCode::ConnectionLost);
  }
}

TEST_CASE("ReplyReader: a protocol error after good replies fails once the good ones were read", "[unit]") {
  ReplyReader reader;
  const std::string resp = "+OK\r\n?garbage\r\n";
  ErrorCode code = ErrorCode::InvalidArgument;
  try {
    reader.feed(resp.data(), resp.size());
    const Reply ok = reader.next();
    REQUIRE(ok);
    CHECK(isStatusOk(ok.get()));
    (void)reader.next();
    FAIL("the reader accepted the garbage");
  } catch (const Error& error) {
    code = error.code();
  }
  CHECK(code == ErrorCode::ConnectionLost);
}

namespace {

// The virtual memory of this process (VmSize of /proc/self/status), in kB.
long long virtualKilobytes() {
  std::ifstream status("/proc/self/status");
  std::string field;
  while (status >> field) {
    long long value = 0;
    if (field == "VmSize:" && status >> value) return value;
  }
  return -1;
}

}  // namespace

TEST_CASE("ReplyReader: a reply announcing a huge array does not make the reader allocate for it", "[unit]") {
  // Thirteen bytes from a broken or hostile server must not cost gigabytes. (hiredis alone would
  // allocate the element array of a multi-bulk header as soon as it reads the header: 8 bytes per
  // announced element, here 2 GB, and 16 GB for *2147483647.) Refusing the reply, or waiting for
  // its elements without reserving room for all of them, are both fine.
  const long long before = virtualKilobytes();
  REQUIRE(before > 0);
  long long after = before;
  {
    ReplyReader reader;
    const std::string header = "*268435455\r\n";
    try {
      reader.feed(header.data(), header.size());
      const Reply reply = reader.next();
      CHECK_FALSE(reply);
    } catch (const Error& error) {
      CHECK(error.code() == ErrorCode::ConnectionLost);
    }
    after = virtualKilobytes();
  }
  INFO("the process's virtual memory grew by " << (after - before) / 1024 << " MB reading the header");
  CHECK(after - before < 256 * 1024);
}

TEST_CASE("ReplyReader: bytes hiredis would read differently from the guard are refused, after the replies before them", "[unit]") {
  // Each case: one good reply, then the bad bytes. The guard must follow hiredis exactly, or the
  // array limit would be checked against the wrong headers.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"+OK\r\n", ",1.5\r\n"},                 // RESP3 double: not a type the library reads
      {"+OK\r\n", "_\r\n"},                    // RESP3 null
      {"+OK\r\n", "%1\r\n+a\r\n+b\r\n"},       // RESP3 map
      {"+OK\r\n", "+no CR\n:1\r\n"},           // a line ended by a lone LF
      {"+OK\r\n", "$3x\r\nabc\r\n"},          // a length with a stray byte
      {"+OK\r\n", "$\r\n\r\n"},               // no length
      {"+OK\r\n", "*1\n$1\r\na\r\n"},          // a header ended by a lone LF
      {"+OK\r\n", "*-2\r\n"},                   // a negative count other than nil's -1
      {"+OK\r\n", "$123456789012345678901234567890\r\n"},
      {"+OK\r\n", "$9223372036854775807\r\n"},  // no overflow counting the bytes to skip
      {"+OK\r\n", "$536870913\r\n"},            // over Redis' own 512 MB limit
      {"+OK\r\n", "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"},
  };
  for (const auto& [good, bad] : cases) {
    INFO(bad);
    const Refusal refused = refusal(good + bad);
    CHECK(refused.repliesBefore == 1);
    REQUIRE(refused.error);
    CHECK(refused.error->code() == ErrorCode::ConnectionLost);
    CHECK_THAT(refused.error->what(), Catch::StartsWith("Redis protocol error: "));
  }
  // Nested 8 deep is still read.
  std::string deep;
  for (int i = 0; i < 8; ++i) deep += "*1\r\n";
  CHECK(parse(deep + ":1\r\n")->type == REDIS_REPLY_ARRAY);
}

TEST_CASE("ReplyReader: an armed MGET answer goes straight into its owners", "[unit]") {
  Owners owners(3);
  const Reply reply = parseSunk("*3\r\n" + bulk("stream-a") + nil + bulk("stream-c"), 3, owners);
  CHECK(reply->type == REDIS_REPLY_ARRAY);
  CHECK(reply->elements == 3);
  CHECK(reply->element == nullptr);  // no value of its own per element
  CHECK(reply->sunkOwners == owners.data());
  CHECK(owners == Owners{"stream-a", "", "stream-c"});
  readMgetReply(reply.get(), 3, owners.data());
  CHECK(owners == Owners{"stream-a", "", "stream-c"});

  // Copied when read into other owners.
  Owners elsewhere(3);
  readMgetReply(reply.get(), 3, elsewhere.data());
  CHECK(elsewhere == owners);
}

TEST_CASE("ReplyReader: an armed reader reads any other reply as usual", "[unit]") {
  for (const std::string& resp : {"*2\r\n" + bulk("a") + bulk("b"), "-ERR no\r\n"s, ":1\r\n"s, nil}) {
    INFO(resp);
    Owners owners(3);
    const Reply reply = parseSunk(resp, 3, owners);
    CHECK(reply->sunkOwners == nullptr);
    CHECK(owners == Owners(3));
  }
  Owners owners(1);
  const Reply array = parseSunk("*2\r\n" + bulk("a") + bulk("b"), 1, owners);
  CHECK(arrayOfStrings(array.get()) == Strings{"a", "b"});
}

TEST_CASE("ReplyReader: a pipeline with a sunk MGET answer, split across two feeds at every byte position", "[unit]") {
  const std::string first = "*4\r\n" + bulk("stream-a") + nil + bulk("") + bulk(std::string("x\0y", 3));
  const std::string resp = first + "+OK\r\n" + "*2\r\n" + bulk("b") + nil;
  for (std::size_t cut = 0; cut <= resp.size(); ++cut) {
    INFO("cut at byte " << cut);
    ReplyReader reader;
    Owners owners(4);
    Owners second(2);
    std::vector<Reply> replies;
    // Armed before every next() for the reply it reads, as the connection does.
    auto drain = [&] {
      for (;;) {
        if (replies.empty()) {
          reader.expectMget(owners.data(), 4);
        } else if (replies.size() == 2) {
          reader.expectMget(second.data(), 2);
        } else {
          reader.expectMget(nullptr, 0);
        }
        Reply reply = reader.next();
        if (!reply) return;
        replies.push_back(std::move(reply));
      }
    };
    reader.feed(resp.data(), cut);
    drain();
    reader.feed(resp.data() + cut, resp.size() - cut);
    drain();
    REQUIRE(replies.size() == 3);
    readMgetReply(replies[0].get(), 4, owners.data());
    CHECK(owners == Owners{"stream-a", "", "", std::string("x\0y", 3)});
    CHECK(isStatusOk(replies[1].get()));
    readMgetReply(replies[2].get(), 2, second.data());
    CHECK(second == Owners{"b", ""});
  }
}

// --- readMgetReply -------------------------------------------------------------------------------------

TEST_CASE("readMgetReply: a string value is the owner of the key at its position", "[unit]") {
  CHECK(readMget("*2\r\n" + bulk("stream-a") + bulk("stream-b"), 2) == Owners{"stream-a", "stream-b"});
}

TEST_CASE("readMgetReply: nil and the empty string mean no owner", "[unit]") {
  CHECK(readMget("*3\r\n" + nil + bulk("stream-b") + bulk(""), 3) == Owners{"", "stream-b", ""});
  CHECK(readMget("*2\r\n" + nil + nil, 2) == Owners{"", ""});
  CHECK(readMget("*2\r\n*-1\r\n" + bulk("b"), 2) == Owners{"", "b"});  // RESP2's nil array is nil too
}

TEST_CASE("readMgetReply: an empty array for no keys", "[unit]") { CHECK(readMget("*0\r\n", 0).empty()); }

TEST_CASE("readMgetReply: a chunk writes its own positions only", "[unit]") {
  const Reply reply = parse("*2\r\n" + bulk("stream-2") + nil);
  Owners owners{"stream-0", "", "", "", "x"};
  readMgetReply(reply.get(), 2, owners.data() + 2);
  CHECK(owners == Owners{"stream-0", "", "stream-2", "", "x"});
}

TEST_CASE("readMgetReply: values are binary-safe strings", "[unit]") {
  const std::string owner = std::string("str\0eam", 7) + " \xc3\xa9\r\n";
  CHECK(readMget("*1\r\n" + bulk(owner), 1) == Owners{owner});
}

TEST_CASE("readMgetReply: a reply of the wrong length is a server error", "[unit]") {
  CHECK(mgetError("*1\r\n" + bulk("stream-a"), 2) == ErrorCode::ServerError);
  CHECK(mgetError("*3\r\n" + bulk("a") + bulk("b") + bulk("c"), 2) == ErrorCode::ServerError);
  CHECK(mgetError("*0\r\n", 1) == ErrorCode::ServerError);
}

TEST_CASE("readMgetReply: a reply that is not an array is a server error", "[unit]") {
  CHECK(mgetError(":1\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("+OK\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError(bulk("stream-a"), 1) == ErrorCode::ServerError);
  CHECK(mgetError(nil, 1) == ErrorCode::ServerError);
  CHECK(mgetError("*-1\r\n", 1) == ErrorCode::ServerError);  // a nil array
}

TEST_CASE("readMgetReply: an element that is not a string or nil is a server error", "[unit]") {
  CHECK(mgetError("*1\r\n:5\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("*1\r\n+stream-a\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("*1\r\n-ERR inside\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("*1\r\n*1\r\n" + bulk("x"), 1) == ErrorCode::ServerError);
  CHECK(mgetError("*2\r\n" + bulk("ok") + ":5\r\n", 2) == ErrorCode::ServerError);
}

TEST_CASE("readMgetReply: an error reply is a server error", "[unit]") {
  CHECK(mgetError("-ERR unknown command 'MGET'\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("-NOPERM this user has no permissions to run the 'mget' command\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("-LOADING Redis is loading the dataset in memory\r\n", 1) == ErrorCode::ServerError);
  CHECK(mgetError("-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", 1) ==
        ErrorCode::ServerError);
}

TEST_CASE("readMgetReply: Redis Cluster's redirections and CROSSSLOT are unsupported on a standalone URL", "[unit]") {
  CHECK(mgetError("-MOVED 3999 127.0.0.1:6381\r\n", 1) == ErrorCode::Unsupported);
  CHECK(mgetError("-ASK 3999 127.0.0.1:6381\r\n", 1) == ErrorCode::Unsupported);
  CHECK(mgetError("-CROSSSLOT Keys in request don't hash to the same slot\r\n", 2) == ErrorCode::Unsupported);
}

TEST_CASE("readMgetReply: no reply at all is a lost connection", "[unit]") {
  Owners owners(1);
  ErrorCode code = ErrorCode::InvalidArgument;
  try {
    readMgetReply(nullptr, 1, owners.data());
  } catch (const Error& error) {
    code = error.code();
  }
  CHECK(code == ErrorCode::ConnectionLost);
}

// --- Predicates ------------------------------------------------------------------------------------------

TEST_CASE("isIntegerOne: only the integer 1", "[unit]") {
  CHECK(isIntegerOne(parse(":1\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(":0\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(":2\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(":-1\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse("+1\r\n").get()));
  CHECK_FALSE(isIntegerOne(parse(bulk("1")).get()));
  CHECK_FALSE(isIntegerOne(parse(nil).get()));
  CHECK_FALSE(isIntegerOne(parse("-1\r\n").get()));
  CHECK_FALSE(isIntegerOne(nullptr));
}

TEST_CASE("isNoScript: only the NOSCRIPT error", "[unit]") {
  CHECK(isNoScript(parse("-NOSCRIPT No matching script. Please use EVAL.\r\n").get()));
  CHECK_FALSE(isNoScript(parse("-ERR Error running script\r\n").get()));
  CHECK_FALSE(isNoScript(parse("-ERR NOSCRIPT inside the text\r\n").get()));
  CHECK_FALSE(isNoScript(parse(bulk("NOSCRIPT")).get()));
  CHECK_FALSE(isNoScript(parse("+NOSCRIPT\r\n").get()));
  CHECK_FALSE(isNoScript(parse(":1\r\n").get()));
  CHECK_FALSE(isNoScript(nullptr));
}

TEST_CASE("isStatusOk: only the status OK", "[unit]") {
  CHECK(isStatusOk(parse("+OK\r\n").get()));
  CHECK_FALSE(isStatusOk(parse(bulk("OK")).get()));
  CHECK_FALSE(isStatusOk(parse("+QUEUED\r\n").get()));
  CHECK_FALSE(isStatusOk(parse("+OKAY\r\n").get()));
  CHECK_FALSE(isStatusOk(parse("-OK\r\n").get()));
  CHECK_FALSE(isStatusOk(parse(nil).get()));
  CHECK_FALSE(isStatusOk(parse(":1\r\n").get()));
  CHECK_FALSE(isStatusOk(nullptr));
}

TEST_CASE("isNil: only the nil reply", "[unit]") {
  CHECK(isNil(parse(nil).get()));
  CHECK(isNil(parse("*-1\r\n").get()));  // the nil array of RESP2 is nil too
  CHECK_FALSE(isNil(parse(bulk("")).get()));
  CHECK_FALSE(isNil(parse("*0\r\n").get()));
  CHECK_FALSE(isNil(parse("+OK\r\n").get()));
  CHECK_FALSE(isNil(parse(":0\r\n").get()));
  CHECK_FALSE(isNil(nullptr));
}
