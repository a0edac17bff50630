#pragma once

#include <cstddef>
#include <string>
#include <vector>

struct redisReply;

namespace streamlock::detail {

// Interprets one MGET reply for the keys [begin, end) of a batch: owners[begin + i] = value i.
// A nil or empty value means no owner and leaves owners[begin + i] as it was (empty).
// Throws Error(Unsupported) for a Redis Cluster redirection or CROSSSLOT error, Error(ServerError)
// for any other error reply, and Error(ServerError) for a reply of the wrong type or length.
void interpretMgetReply(const redisReply* reply, std::size_t begin, std::size_t end, std::vector<std::string>& owners);

// Throws Error(ServerError) (or Unsupported for cluster errors) when reply is an error reply;
// a null reply throws Error(ConnectionLost).
void throwIfError(const redisReply* reply);

// True for an integer reply of 1 (compare-and-expire / compare-and-delete succeeded).
bool isIntegerOne(const redisReply* reply) noexcept;

// True for a NOSCRIPT error reply (EVALSHA of a script the server does not have).
bool isNoScript(const redisReply* reply) noexcept;

}  // namespace streamlock::detail
