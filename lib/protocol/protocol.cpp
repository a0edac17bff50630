#include "streamlock/protocol.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace streamlock::protocol {

const char* const kExtendScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('EXPIRE', KEYS[1], ARGV[2]) else return 0 end";

const char* const kReleaseScript =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) else return 0 end";

std::string lockKey(std::string_view keyPrefix, std::string_view chatId) {
  std::string key;
  key.reserve(keyPrefix.size() + chatId.size());
  key.append(keyPrefix);
  key.append(chatId);
  return key;
}

Command acquireCommand(std::string_view key, std::string_view streamId, Seconds ttl) {
  return {"SET", std::string(key), std::string(streamId), "NX", "EX", std::to_string(ttl.count())};
}

Command extendCommand(std::string_view key, std::string_view streamId, Seconds ttl) {
  return {"EVAL", kExtendScript, "1", std::string(key), std::string(streamId), std::to_string(ttl.count())};
}

Command releaseCommand(std::string_view key, std::string_view streamId) {
  return {"EVAL", kReleaseScript, "1", std::string(key), std::string(streamId)};
}

WriterTiming writerTiming(const LockOptions& lock, std::chrono::milliseconds commandTimeout) {
  using std::chrono::milliseconds;
  const auto ttl = std::chrono::duration_cast<milliseconds>(lock.ttl);
  WriterTiming timing{};
  timing.heartbeatInterval = lock.heartbeatInterval > milliseconds{0} ? lock.heartbeatInterval : ttl / 3;
  timing.retryDelay = std::min(milliseconds{1000}, timing.heartbeatInterval / 4);
  timing.ownershipWindow = ttl - std::max(commandTimeout, milliseconds{500});
  return timing;
}

std::vector<std::string> chatsToLookUp(const std::vector<MarkerCandidate>& candidates) {
  std::vector<std::string> out;
  for (const auto& candidate : candidates) {
    if (candidate.marker && !candidate.marker->empty()) out.push_back(candidate.chatId);
  }
  return out;
}

LookupPlan planLookup(const std::vector<std::string>& chatIds, std::string_view keyPrefix, std::size_t chunk) {
  if (chunk == 0) chunk = 1;
  LookupPlan plan;
  plan.chatIds = chatIds;
  plan.keys.reserve(chatIds.size());
  for (const auto& id : chatIds) plan.keys.push_back(lockKey(keyPrefix, id));
  for (std::size_t begin = 0; begin < plan.keys.size(); begin += chunk) {
    const std::size_t end = std::min(plan.keys.size(), begin + chunk);
    Command& mget = plan.commands.emplace_back();
    mget.reserve(end - begin + 1);
    mget.emplace_back("MGET");
    mget.insert(mget.end(), plan.keys.begin() + static_cast<std::ptrdiff_t>(begin),
                plan.keys.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return plan;
}

ActiveStreams verifiedOwners(const LookupPlan& plan, const std::vector<std::optional<std::string>>& values) {
  if (values.size() != plan.keys.size()) {
    throw std::invalid_argument(fmt::format("the lookup asked for {} keys and got {} values", plan.keys.size(),
                                            values.size()));
  }
  ActiveStreams out;
  out.status = LookupStatus::Verified;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] && !values[i]->empty()) out.owners.emplace(plan.chatIds[i], *values[i]);
  }
  return out;
}

ActiveStreams unknownOwners(const LookupPlan& plan, const PendingStreams& pending) {
  ActiveStreams out;
  out.status = LookupStatus::Unknown;
  out.owners = pending.owners(plan.chatIds);
  return out;
}

std::vector<StaleMarker> staleMarkers(const std::vector<ReconciledMarker>& reconciled) {
  std::vector<StaleMarker> out;
  for (const auto& marker : reconciled) {
    if (marker.staleMarker) out.push_back({marker.chatId, *marker.staleMarker});
  }
  return out;
}

std::string quoteIdentifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

Statement columnTypesQuery(const RepairOptions& repair) {
  return {"SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
          "WHERE a.attrelid = to_regclass($1) AND a.attname IN ($2, $3) AND a.attnum > 0 AND NOT a.attisdropped",
          {quoteIdentifier(repair.table), repair.idColumn, repair.markerColumn}};
}

std::string repairSql(const RepairOptions& repair, std::string_view idType, std::string_view markerType) {
  // format_type() returns type names that are safe to splice (quoted where needed).
  return fmt::format(
      "UPDATE {0} AS chat SET {2} = NULL FROM unnest($1::text[], $2::text[]) AS stale(id, marker) "
      "WHERE chat.{1} = stale.id::{3} AND chat.{2} = stale.marker::{4}",
      quoteIdentifier(repair.table), quoteIdentifier(repair.idColumn), quoteIdentifier(repair.markerColumn), idType,
      markerType);
}

namespace {

// A PostgreSQL text[] literal, every element quoted: {"a","b \"c\""}.
template <typename Field>
std::string textArray(const std::vector<StaleMarker>& markers, Field field) {
  std::string out = "{";
  for (const auto& marker : markers) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char c : marker.*field) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

}  // namespace

SqlParams repairParameters(const std::vector<StaleMarker>& stale) {
  return {textArray(stale, &StaleMarker::chatId), textArray(stale, &StaleMarker::marker)};
}

Statement writeMarkerStatement(const RepairOptions& table, std::string_view chatId, std::string_view streamId) {
  return {fmt::format("UPDATE {} SET {} = $2 WHERE {} = $1", quoteIdentifier(table.table),
                      quoteIdentifier(table.markerColumn), quoteIdentifier(table.idColumn)),
          {std::string(chatId), std::string(streamId)}};
}

Statement clearMarkerStatement(const RepairOptions& table, std::string_view chatId, std::string_view streamId) {
  return {fmt::format("UPDATE {0} SET {1} = NULL WHERE {2} = $1 AND {1} = $2", quoteIdentifier(table.table),
                      quoteIdentifier(table.markerColumn), quoteIdentifier(table.idColumn)),
          {std::string(chatId), std::string(streamId)}};
}

}  // namespace streamlock::protocol
