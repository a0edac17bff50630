#include "client/fork.h"

#include <pthread.h>

#include <mutex>
#include <set>

#include "client/core.h"

namespace streamlock::detail {
namespace {

struct Registry {
  std::mutex mutex;
  std::set<ClientCore*> cores;
};

// Never destroyed: the fork handlers may run during static destruction of another library.
Registry& registry() {
  static Registry* instance = new Registry;
  return *instance;
}

void prepare() {
  Registry& r = registry();
  r.mutex.lock();
  for (ClientCore* core : r.cores) core->lockForFork();
}

void parent() {
  Registry& r = registry();
  for (ClientCore* core : r.cores) core->unlockAfterFork(false);
  r.mutex.unlock();
}

void child() {
  Registry& r = registry();
  for (ClientCore* core : r.cores) core->unlockAfterFork(true);
  r.mutex.unlock();
}

}  // namespace

void ForkRegistry::add(ClientCore* core) {
  static std::once_flag handlers;
  std::call_once(handlers, [] { ::pthread_atfork(prepare, parent, child); });
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mutex);
  r.cores.insert(core);
}

void ForkRegistry::remove(ClientCore* core) noexcept {
  Registry& r = registry();
  std::lock_guard<std::mutex> guard(r.mutex);
  r.cores.erase(core);
}

}  // namespace streamlock::detail
