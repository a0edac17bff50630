#pragma once

// The server's SQL: each request's authentication, access check and read is ONE parameterised
// statement, prepared per pooled connection by streamlock::PgPool. No I/O here: the routes run the
// statements (routes.cpp), these functions write them and read their rows.

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

// The chat's columns, as views into the text of the result that ChatLookup holds.
struct ChatDetail {
  std::string_view id;
  std::optional<std::string_view> title;
  std::string_view messagesJson;   // the stored jsonb, as JSON text
  std::string_view resourcesJson;
  std::optional<std::string_view> marker;
  std::string_view createdAt;
  std::string_view updatedAt;
};

struct ChatLookup {
  bool authenticated = false;
  std::optional<ChatDetail> chat;  // null: not found or not visible to the caller
  streamlock::PgResult rows;       // owns the text that chat points into (moves keep it valid)
};

// A statement of the server and its text parameters, for PgPool::execute.
struct Statement {
  std::string sql;
  streamlock::PgParams params;
};

// Each route's statement, and the reading of its rows. The readers are pure and never throw
// (beyond std::bad_alloc): any result, even an empty one, reads as some answer.

// The caller's mothership chats in a workspace, with the authentication and access verdicts.
Statement listChatsStatement(const std::string& token, const std::string& workspaceId, Scope scope);
ChatList readChatList(streamlock::PgResult rows);

// One chat of the caller, if visible. chatId must be a UUID (see isUuid).
Statement findChatStatement(const std::string& token, const std::string& chatId);
ChatLookup readChatLookup(streamlock::PgResult rows);

// Authentication alone, for requests whose form is wrong (400, or 404 for a non-UUID chat id).
Statement authenticateStatement(const std::string& token);
bool readAuthenticated(const streamlock::PgResult& rows);

// SELECT 1 within the timeout (the health check; blocking, never on the library's I/O thread).
// Throws streamlock::Error when the database fails.
void pingDatabase(streamlock::PgPool& db, std::chrono::milliseconds timeout);

// 8-4-4-4-12 hex digits, any case.
bool isUuid(std::string_view text) noexcept;

}  // namespace mothership
