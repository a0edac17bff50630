#include "streamlock/pending_streams.h"

namespace streamlock {

void PendingStreams::record(const std::string& chatId, const std::string& streamId) {
  std::lock_guard<std::mutex> guard(mutex_);
  owners_[chatId] = streamId;
}

bool PendingStreams::tryRecord(const std::string& chatId, const std::string& streamId) {
  std::lock_guard<std::mutex> guard(mutex_);
  return owners_.emplace(chatId, streamId).second;
}

bool PendingStreams::resolve(const std::string& chatId, const std::string& streamId) {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    auto it = owners_.find(chatId);
    if (it == owners_.end() || it->second != streamId) return false;
    owners_.erase(it);
  }
  released_.notify_all();
  return true;
}

std::optional<std::string> PendingStreams::owner(const std::string& chatId) const {
  std::lock_guard<std::mutex> guard(mutex_);
  auto it = owners_.find(chatId);
  if (it == owners_.end()) return std::nullopt;
  return it->second;
}

std::unordered_map<std::string, std::string> PendingStreams::owners(const std::vector<std::string>& chatIds) const {
  std::unordered_map<std::string, std::string> out;
  std::lock_guard<std::mutex> guard(mutex_);
  if (owners_.empty()) return out;
  for (const auto& chatId : chatIds) {
    auto it = owners_.find(chatId);
    if (it != owners_.end()) out.emplace(chatId, it->second);
  }
  return out;
}

bool PendingStreams::waitUntilReleased(const std::string& chatId, Milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return released_.wait_for(lock, timeout, [&] { return owners_.find(chatId) == owners_.end(); });
}

std::size_t PendingStreams::size() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return owners_.size();
}

void PendingStreams::clear() {
  {
    std::lock_guard<std::mutex> guard(mutex_);
    owners_.clear();
  }
  released_.notify_all();
}

}  // namespace streamlock
