#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "redis/topology.h"

namespace streamlock::detail {

// The hash slot of a key (Redis Cluster spec: CRC16-XMODEM of the key, or of its first non-empty
// {hash tag}, modulo 16384).
std::uint16_t keySlot(std::string_view key) noexcept;

// A Redis Cluster, found from its seed nodes.
//   - The slot map comes from CLUSTER SLOTS, asked of the seeds then of the known nodes in turn;
//     it is loaded before the first command and again, in the background, after a MOVED, a
//     CLUSTERDOWN or a failed connection.
//   - execute() sends each node one pipeline with all of its commands, to every node at once.
//     MOVED moves the slot in the map and sends the command to the new node; ASK sends ASKING and
//     the command to the named node once, without touching the map; TRYAGAIN and CLUSTERDOWN back
//     off and send again; all within the caller's deadline.
//   - lookup() is a per-key GET in those per-node pipelines, verified only when every key was
//     answered.
//   - Each master has one connection, shared by every caller: the commands for one key keep their
//     order, and a failed acquire's cleanup follows its SET on the same connection.
std::unique_ptr<RedisTopology> makeClusterTopology(Loop& loop, TopologySettings settings);

}  // namespace streamlock::detail
