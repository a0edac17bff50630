#include "io/fork_epoch.h"

#include <pthread.h>

#include <atomic>
#include <mutex>

namespace streamlock::detail {
namespace {

std::atomic<std::uint64_t> epoch{0};

void inChild() noexcept { epoch.fetch_add(1, std::memory_order_relaxed); }

}  // namespace

std::uint64_t forkEpoch() noexcept {
  static std::once_flag registered;
  std::call_once(registered, [] { ::pthread_atfork(nullptr, nullptr, inChild); });
  return epoch.load(std::memory_order_relaxed);
}

}  // namespace streamlock::detail
