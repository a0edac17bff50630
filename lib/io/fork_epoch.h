#pragma once

#include <cstdint>

namespace streamlock::detail {

// How many fork()s this process is descended through: 0 in the process that loaded the library,
// bumped in each child by a pthread_atfork handler (registered on first call). A copy of an object
// made before a fork() tells it is in a child by comparing the epoch it recorded with this one: one
// atomic load, where getpid() is a system call.
std::uint64_t forkEpoch() noexcept;

}  // namespace streamlock::detail
