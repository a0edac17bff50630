#pragma once

// The server's SQL: each request's authentication, access check and read is ONE parameterised
// statement, prepared per pooled connection by streamlock::PgPool.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <streamlock/postgres.h>

namespace mothership {

enum class Scope { Active, Archived };

// One row of the list, as views into the text of the result that ChatList holds.
struct ChatSummary {
  std::string_view id;
  std::optional<std::string_view> title;
  std::string_view updatedAt;                // ISO 8601 UTC with milliseconds
  std::optional<std::string_view> marker;    // the persisted active-stream marker
  std::optional<std::string_view> lastSeenAt;
  bool pinned = false;
  std::optional<std::string_view> deletedAt;
};

enum class Access { Unauthorized, Forbidden, Granted };

struct ChatList {
  Access access = Access::Unauthorized;
  std::vector<ChatSummary> chats;  // ordered: pinned desc, updated_at desc, id
  streamlock::PgResult rows;       // owns the text that chats points into (moves keep it valid)
};

struct ChatDetail {
  std::string id;
  std::optional<std::string> title;
  std::string messagesJson;   // the stored jsonb, as JSON text
  std::string resourcesJson;
  std::optional<std::string> marker;
  std::string createdAt;
  std::string updatedAt;
};

struct ChatLookup {
  bool authenticated = false;
  std::optional<ChatDetail> chat;  // null: not found or not visible to the caller
};

// Every function throws streamlock::Error when the database fails.

// The caller's mothership chats in a workspace, with the authentication and access verdicts.
ChatList listChats(streamlock::PgPool& db, const std::string& token, const std::string& workspaceId,
                   Scope scope);

// One chat of the caller, if visible. chatId must be a UUID (see isUuid).
ChatLookup findChat(streamlock::PgPool& db, const std::string& token, const std::string& chatId);

// Authentication alone, for requests whose form is wrong (400, or 404 for a non-UUID chat id).
bool isValidToken(streamlock::PgPool& db, const std::string& token);

// SELECT 1 within the timeout.
void pingDatabase(streamlock::PgPool& db, std::chrono::milliseconds timeout);

// 8-4-4-4-12 hex digits, any case.
bool isUuid(std::string_view text) noexcept;

}  // namespace mothership
