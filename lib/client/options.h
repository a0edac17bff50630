#pragma once

#include "streamlock/options.h"

namespace streamlock::detail {

// The options with defaults filled in (logger). Throws Error(InvalidArgument) naming the first bad
// option, e.g. "redis.lookupDeadline must be positive (got 0 ms)".
Options validated(Options options);

}  // namespace streamlock::detail
