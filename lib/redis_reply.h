#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;
struct redisReply;
struct redisReplyObjectFunctions;

namespace streamlock::detail {

// Reads the replies of a pipeline of MGETs straight into a vector of owners: hiredis' reader
// parses the bytes, and instead of building a reply object per value it hands each value to this
// class (hiredis' documented hook, redisReplyObjectFunctions), which writes owners[begin + i].
//
// Each reply answers for the keys [begin, end) given to expect() before it is read. A nil or empty
// value means no owner and leaves owners[begin + i] as it was (empty).
//   - An error reply is returned whole by the reader; finish() then throws Error(Unsupported) for a
//     Redis Cluster redirection or CROSSSLOT error and Error(ServerError) for any other.
//   - A reply that is not an array (and not an error) is read whole too; finish() throws
//     Error(ServerError).
//   - An array of the wrong length, or a value in it that is neither a string nor nil, stops the
//     reader at once (nothing of a wrong-length array is allocated, however long it claims to be):
//     redisReaderGetReply fails, the stream is out of step and its connection must be dropped, and
//     abandoned() says why.
class MgetReplies {
 public:
  explicit MgetReplies(std::vector<std::string>& owners) : owners_(owners) {}
  MgetReplies(const MgetReplies&) = delete;
  MgetReplies& operator=(const MgetReplies&) = delete;

  // The next reply answers for the keys [begin, end) of owners. A range that is not inside owners
  // accepts no array.
  void expect(std::size_t begin, std::size_t end) noexcept;
  // Call with what redisReaderGetReply returned once it returned a reply: throws as described above.
  void finish(const void* reply) const;
  // Why this class stopped the reader, or null when it did not (the reader failed by itself).
  const char* abandoned() const noexcept { return abandoned_; }

 private:
  friend class MgetReaderScope;
  friend struct MgetCallbacks;

  std::vector<std::string>& owners_;
  bool valid_ = true;
  std::size_t begin_ = 0;
  std::size_t count_ = 0;
  enum class Shape { Pending, Array, Error, NotArray } shape_ = Shape::Pending;
  std::string error_;      // the text of an error reply
  const char* abandoned_ = nullptr;  // why the reader was stopped (a literal: set without allocating)
};

// Installs an MgetReplies on a reader for the scope's lifetime, then restores the reader's own
// object functions. A reply that the scope left half-read is forgotten by the reader (its objects
// belong to MgetReplies, which frees nothing), so that a later redisReaderFree never sees it.
class MgetReaderScope {
 public:
  MgetReaderScope(redisReader* reader, MgetReplies& replies) noexcept;
  ~MgetReaderScope();
  MgetReaderScope(const MgetReaderScope&) = delete;
  MgetReaderScope& operator=(const MgetReaderScope&) = delete;

 private:
  redisReader* reader_;
  MgetReplies& replies_;
  redisReplyObjectFunctions* savedFunctions_;
  void* savedPrivdata_;
};

// Throws Error(ServerError) (or Unsupported for cluster errors) when reply is an error reply;
// a null reply throws Error(ConnectionLost).
void throwIfError(const redisReply* reply);

// True for an integer reply of 1 (compare-and-expire / compare-and-delete succeeded).
bool isIntegerOne(const redisReply* reply) noexcept;

// True for a NOSCRIPT error reply (EVALSHA of a script the server does not have).
bool isNoScript(const redisReply* reply) noexcept;

}  // namespace streamlock::detail
