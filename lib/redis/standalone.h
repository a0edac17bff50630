#pragma once

// The commands of a topology on one connection (a standalone server, or the master the sentinels
// named): every command in one pipeline, lookups as MGETs.

#include "redis/topology.h"

namespace streamlock::detail {

void executeOn(RedisConnection& connection, std::vector<KeyedCommand> commands,
               std::function<void(std::vector<CommandOutcome>)> done);
void lookupOn(RedisConnection& connection, const std::string& prefix, const std::vector<const std::string*>& ids,
              std::size_t chunk, std::function<void(LookupReply)> done);
void pingOn(RedisConnection& connection, std::function<void(std::optional<Error>)> done);

}  // namespace streamlock::detail
