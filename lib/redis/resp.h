#pragma once

// RESP in and out, without I/O: commands are encoded here (argv form only), replies are parsed by
// hiredis' public reader API (redisReaderCreate / Feed / GetReply) into hiredis reply trees, and
// read by the small pure functions below.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;
struct redisReply;

namespace streamlock::detail {

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept;
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// Appends one command in RESP (an array of bulk strings) to out.
void appendCommand(std::string& out, const std::vector<std::string_view>& argv);
void appendCommand(std::string& out, std::initializer_list<std::string_view> argv);

// Appends MGETs of the keys prefix + *ids[i], at most chunk keys each; returns how many commands.
std::size_t appendMgets(std::string& out, std::string_view prefix, const std::vector<const std::string*>& ids,
                        std::size_t chunk);

// The most elements an array of a reply may announce: hiredis allocates room for all of them as it
// reads the header, so a broken or hostile server's "*2147483647" would cost 16 GB.
constexpr long long kMaxReplyElements = 1 << 20;

// A hiredis reader: bytes in, reply trees out. Every array header is checked against
// kMaxReplyElements before hiredis sees it (ArrayGuard).
class ReplyReader {
 public:
  ReplyReader();
  ~ReplyReader();
  ReplyReader(const ReplyReader&) = delete;
  ReplyReader& operator=(const ReplyReader&) = delete;

  // Throws Error(ConnectionLost) when the bytes are refused: a protocol error, or an array
  // announcing more than kMaxReplyElements elements.
  void feed(const char* data, std::size_t size);
  // The next whole reply, or null while it is incomplete. Throws Error(ConnectionLost) on a
  // protocol error: the stream is out of step and its connection must be closed.
  Reply next();

 private:
  // Follows the RESP structure of the bytes fed, just enough to find every array header (lines are
  // skipped, bulk strings jumped over by their length), across feeds.
  class ArrayGuard {
   public:
    // Throws Error(ConnectionLost) for an array header over kMaxReplyElements.
    void scan(const char* data, std::size_t size);

   private:
    enum class State { Type, Header, Line, Bulk, Lost };
    void elementDone();
    State state_ = State::Type;
    char type_ = 0;
    std::string header_;
    long long bulkLeft_ = 0;
    std::vector<long long> open_;  // elements still to come in each enclosing array
  };

  redisReader* reader_;
  ArrayGuard guard_;
};

std::string_view replyText(const redisReply* reply) noexcept;
bool isErrorReply(const redisReply* reply) noexcept;
bool isNoScript(const redisReply* reply) noexcept;
bool isIntegerOne(const redisReply* reply) noexcept;
bool isInteger(const redisReply* reply) noexcept;
bool isStatusOk(const redisReply* reply) noexcept;
bool isNil(const redisReply* reply) noexcept;

// The error an error reply stands for: ServerError "Redis error: <text, cut short>", or for cluster
// redirections and CROSSSLOT (which a standalone URL cannot follow) Unsupported.
[[noreturn]] void throwReplyError(const redisReply* reply);

// Reads one MGET reply into owners[0..count): each string value is its key's owner, nil or empty
// means none (owners[i] left empty). Throws Error(ServerError) for an error reply or a reply of the
// wrong shape (not an array of count strings or nils).
void readMgetReply(const redisReply* reply, std::size_t count, std::string* owners);

}  // namespace streamlock::detail
