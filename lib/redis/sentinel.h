#pragma once

#include <memory>

#include "redis/topology.h"

namespace streamlock::detail {

// The master that a set of sentinels names.
//   - Discovery asks the sentinels in order (each within a short deadline) for
//     SENTINEL get-master-addr-by-name NAME, connects to the address (AUTH, SELECT) and checks that
//     ROLE says master before anything else is sent; a replica or an unknown master means asking
//     again shortly.
//   - A subscription to +switch-master on a sentinel, any connection error, a timed-out command
//     (suspect()) or a -READONLY reply drops the master's connection; the next command discovers
//     again, never reusing the cached address.
//   - Sentinels are asked without AUTH (the URL's credentials are the master's), over TLS for the
//     rediss-sentinel form.
std::unique_ptr<RedisTopology> makeSentinelTopology(Loop& loop, TopologySettings settings);

}  // namespace streamlock::detail
