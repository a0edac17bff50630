#pragma once

// RESP in and out, without I/O: commands are encoded here (argv form only), replies are parsed by
// hiredis' public reader API (redisReaderCreateWithFunctions / Feed / GetReply) into the library's
// own reply values, and read by the small pure functions below.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

namespace streamlock::detail {

// One reply, or one element of an array reply, as ReplyReader builds it: the fields of hiredis'
// redisReply (type is a REDIS_REPLY_* of <hiredis/read.h>), in one allocation per value.
struct ReplyValue {
  int type = 0;
  long long integer = 0;                // INTEGER
  std::size_t len = 0;                  // STRING, STATUS, ERROR: len bytes at str, then a NUL
  const char* str = nullptr;
  std::size_t elements = 0;             // ARRAY
  ReplyValue** element = nullptr;       // ARRAY: elements values; null when sunk
  // An MGET answer read straight into its owners (ReplyReader::expectMget): no element values;
  // owners[i] holds the i-th string (nil: left as it was), badValue tells that an element was not
  // a string or nil.
  std::string* sunkOwners = nullptr;
  bool badValue = false;
};

struct ReplyDeleter {
  void operator()(ReplyValue* reply) const noexcept;
};
using Reply = std::unique_ptr<ReplyValue, ReplyDeleter>;

// Appends one command in RESP (an array of bulk strings) to out.
void appendCommand(std::string& out, const std::vector<std::string_view>& argv);
void appendCommand(std::string& out, std::initializer_list<std::string_view> argv);

// Appends MGETs of the keys prefix + *ids[i], at most chunk keys each; returns how many commands.
std::size_t appendMgets(std::string& out, std::string_view prefix, const std::vector<const std::string*>& ids,
                        std::size_t chunk);

// The most elements an array of a reply may announce: hiredis allocates room for all of them as it
// reads the header, so a broken or hostile server's "*2147483647" would cost 16 GB.
constexpr long long kMaxReplyElements = 1 << 20;
// The longest bulk string read: Redis' own limit (proto-max-bulk-len, 512 MB by default).
constexpr long long kMaxBulkLength = 512LL * 1024 * 1024;
// The deepest nesting of arrays read (Redis' replies to the library's commands nest 3 deep).
constexpr std::size_t kMaxReplyDepth = 8;

// A hiredis reader: bytes in, reply values out. The bytes are checked before hiredis sees them
// (ArrayGuard): only the RESP2 types, well-formed lengths, arrays of at most kMaxReplyElements.
// hiredis gets the bytes up to the first bad one only, so that the replies before it are still
// read, and whatever hiredis version is installed never parses a type the library does not build.
class ReplyReader {
 public:
  ReplyReader();
  ~ReplyReader();
  ReplyReader(const ReplyReader&) = delete;
  ReplyReader& operator=(const ReplyReader&) = delete;

  // Throws Error(ConnectionLost) when hiredis refuses the bytes.
  void feed(const char* data, std::size_t size);
  // The next whole reply, or null while it is incomplete. Throws Error(ConnectionLost) on a
  // protocol error (once the replies before it were returned): the stream is out of step and its
  // connection must be closed.
  Reply next();

  // The reply that next() is reading (or will start next), if it is an array of exactly count
  // elements, is an MGET answer: its strings are assigned straight to owners[0..count) as they are
  // parsed, without a value each (nil leaves owners[i] as it was), and readMgetReply only checks
  // it. owners must outlive that reply; null disarms. The connection sets it before every next().
  void expectMget(std::string* owners, std::size_t count) noexcept {
    mgetOwners_ = owners;
    mgetCount_ = count;
  }

 private:
  // Follows the RESP structure of the bytes fed, just enough to find every array header (lines are
  // skipped, bulk strings jumped over by their length), across feeds.
  class ArrayGuard {
   public:
    // How many of these bytes may go to hiredis: all of them, or those before the first bad one
    // (then failure() says why, and every later call accepts nothing).
    std::size_t scan(const char* data, std::size_t size);
    const std::string& failure() const noexcept { return failure_; }

   private:
    enum class State { Type, Header, Line, Bulk, Lost };
    // Reads a $ or * header whose digits (and CR) are text; false when it is malformed.
    bool header(std::string_view text);
    void elementDone();
    void fail(std::string why);
    State state_ = State::Type;
    char type_ = 0;
    std::string header_;  // a header split across feeds
    bool lineCr_ = false;  // a line split across feeds: its last byte so far was CR
    long long bulkLeft_ = 0;
    std::vector<long long> open_;  // elements still to come in each enclosing array
    std::string failure_;
  };

  friend struct ReplyFunctions;  // hiredis' callbacks, in resp.cpp
  redisReader* reader_;
  ArrayGuard guard_;
  std::string* mgetOwners_ = nullptr;
  std::size_t mgetCount_ = 0;
};

std::string_view replyText(const ReplyValue* reply) noexcept;
bool isErrorReply(const ReplyValue* reply) noexcept;
bool isNoScript(const ReplyValue* reply) noexcept;
bool isIntegerOne(const ReplyValue* reply) noexcept;
bool isInteger(const ReplyValue* reply) noexcept;
bool isStatusOk(const ReplyValue* reply) noexcept;
bool isNil(const ReplyValue* reply) noexcept;

// The error an error reply stands for: ServerError "Redis error: <text, cut short>", or for cluster
// redirections and CROSSSLOT (which a standalone URL cannot follow) Unsupported.
[[noreturn]] void throwReplyError(const ReplyValue* reply);

// Reads one MGET reply into owners[0..count): each string value is its key's owner, nil or empty
// means none (owners[i] left empty). Throws Error(ServerError) for an error reply or a reply of the
// wrong shape (not an array of count strings or nils). A reply sunk into these owners (expectMget)
// is only checked; one sunk elsewhere is copied from there.
void readMgetReply(const ReplyValue* reply, std::size_t count, std::string* owners);

}  // namespace streamlock::detail
