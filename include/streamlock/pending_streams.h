#pragma once

/// @file
/// PendingStreams, the process-local map of the streams this process runs.

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "streamlock/options.h"

namespace streamlock {

/// The process-local map chatId -> streamId of the streams this process runs. It answers for the
/// chats when Redis cannot, and it is the whole lock when Redis is not configured.
/// Every member is thread-safe; none blocks beyond a short mutex hold except waitUntilReleased.
class PendingStreams {
 public:
  /// Records streamId as the local owner of chatId, replacing any previous owner.
  void record(const std::string& chatId, const std::string& streamId);
  /// Records streamId only when chatId has no local owner; returns whether it did.
  bool tryRecord(const std::string& chatId, const std::string& streamId);
  /// Removes the entry only while it still names streamId; returns whether it did.
  bool resolve(const std::string& chatId, const std::string& streamId);
  /// The local owner of chatId, if any.
  std::optional<std::string> owner(const std::string& chatId) const;
  /// The local owners of those chats that have one, under one lock.
  std::unordered_map<std::string, std::string> owners(const std::vector<std::string>& chatIds) const;
  /// Blocks until chatId has no local owner or the timeout passes; returns true once released.
  bool waitUntilReleased(const std::string& chatId, Milliseconds timeout) const;
  /// How many chats have a local owner.
  std::size_t size() const;
  /// Removes every entry (Client::shutdown() does).
  void clear();

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable released_;
  std::unordered_map<std::string, std::string> owners_;
};

}  // namespace streamlock
