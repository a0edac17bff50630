#pragma once

namespace streamlock::detail {

class ClientCore;

// fork() handlers (pthread_atfork, registered once per process with the first Client): before a
// fork, each live Client's I/O thread is held outside its work and its queues' locks are taken, so
// that the child's copy of every Client is consistent; after it, the parent goes on and the child
// marks its copies as forked (usable for nothing but destruction, which only frees memory). This
// list of live Clients is the library's only process-wide state; it shares nothing between Clients.
class ForkRegistry {
 public:
  static void add(ClientCore* core);
  static void remove(ClientCore* core) noexcept;
};

}  // namespace streamlock::detail
