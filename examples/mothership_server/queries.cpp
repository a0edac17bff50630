#include "queries.h"

#include <cctype>
#include <utility>

#include <streamlock/postgres.h>

namespace mothership {
namespace {

// The caller: the user of an unrevoked key whose token_sha256 is the lowercase hex SHA-256 of $1.
// sha256() is built into PostgreSQL 11+, so no pgcrypto is needed; the token never leaves $1.
#define CALLER_CTE                                                                 \
  "caller AS (\n"                                                                  \
  "  SELECT user_id FROM api_keys\n"                                               \
  "  WHERE token_sha256 = encode(sha256(convert_to($1::text, 'UTF8')), 'hex')\n"   \
  "    AND revoked_at IS NULL)"

// ISO 8601 UTC with truncated milliseconds, whatever the session's time zone.
#define ISO_UTC(column) "to_char(" column " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

// One row always: the verdicts, then the chat columns (all NULL when there is no chat).
constexpr const char* kListChatsSql =
    "WITH " CALLER_CTE ",\n"
    "access AS (\n"
    "  SELECT 1 FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id\n"
    "  WHERE m.workspace_id = $2::text AND m.user_id = (SELECT user_id FROM caller)\n"
    "    AND w.archived_at IS NULL),\n"
    "chats AS (\n"
    "  SELECT c.id, c.title, c.updated_at, c.conversation_id, c.last_seen_at, c.pinned, c.deleted_at\n"
    "  FROM copilot_chats c\n"
    "  WHERE EXISTS (SELECT 1 FROM access)\n"
    "    AND c.user_id = (SELECT user_id FROM caller) AND c.workspace_id = $2::text\n"
    "    AND c.type = 'mothership' AND (c.deleted_at IS NOT NULL) = $3::boolean)\n"
    "SELECT EXISTS (SELECT 1 FROM caller) AS authenticated, EXISTS (SELECT 1 FROM access) AS allowed,\n"
    "  c.id::text AS id, c.title, " ISO_UTC("c.updated_at") " AS updated_at,\n"
    "  c.conversation_id AS marker, " ISO_UTC("c.last_seen_at") " AS last_seen_at,\n"
    "  c.pinned, " ISO_UTC("c.deleted_at") " AS deleted_at\n"
    "FROM (VALUES (1)) AS one LEFT JOIN chats c ON true\n"
    "ORDER BY c.pinned DESC, c.updated_at DESC, c.id";

// A chat is visible to its owner while it is a live mothership chat and, if it has a workspace,
// the owner is still a member of it and it is not archived.
constexpr const char* kFindChatSql =
    "WITH " CALLER_CTE ",\n"
    "chat AS (\n"
    "  SELECT c.id, c.title, c.messages, c.resources, c.conversation_id, c.created_at, c.updated_at\n"
    "  FROM copilot_chats c\n"
    "  WHERE c.id = $2::uuid AND c.user_id = (SELECT user_id FROM caller)\n"
    "    AND c.type = 'mothership' AND c.deleted_at IS NULL\n"
    "    AND (c.workspace_id IS NULL OR EXISTS (\n"
    "      SELECT 1 FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id\n"
    "      WHERE m.workspace_id = c.workspace_id AND m.user_id = c.user_id AND w.archived_at IS NULL)))\n"
    "SELECT EXISTS (SELECT 1 FROM caller) AS authenticated,\n"
    "  c.id::text AS id, c.title, c.messages::text AS messages, c.resources::text AS resources,\n"
    "  c.conversation_id AS marker, " ISO_UTC("c.created_at") " AS created_at,\n"
    "  " ISO_UTC("c.updated_at") " AS updated_at\n"
    "FROM (VALUES (1)) AS one LEFT JOIN chat c ON true";

constexpr const char* kAuthenticateSql = "WITH " CALLER_CTE " SELECT EXISTS (SELECT 1 FROM caller) AS authenticated";

#undef CALLER_CTE
#undef ISO_UTC

// A value as a view into the result's text, or nullopt for NULL.
std::optional<std::string_view> view(const streamlock::PgResult& result, int row, int column) {
  if (result.isNull(row, column)) return std::nullopt;
  return result.value(row, column);
}

bool flag(const streamlock::PgResult& result, int row, int column) { return result.value(row, column) == "t"; }

}  // namespace

Statement listChatsStatement(const std::string& token, const std::string& workspaceId, Scope scope) {
  return {kListChatsSql, {token, workspaceId, std::string(scope == Scope::Archived ? "true" : "false")}};
}

ChatList readChatList(streamlock::PgResult result) {
  ChatList list;
  if (result.rows() == 0) return list;
  if (!flag(result, 0, result.column("authenticated"))) return list;
  if (!flag(result, 0, result.column("allowed"))) {
    list.access = Access::Forbidden;
    return list;
  }
  list.access = Access::Granted;
  // Column numbers looked up once, not once per row and field.
  const int id = result.column("id"), title = result.column("title"), updatedAt = result.column("updated_at"),
            marker = result.column("marker"), lastSeenAt = result.column("last_seen_at"),
            pinned = result.column("pinned"), deletedAt = result.column("deleted_at");
  list.chats.reserve(static_cast<std::size_t>(result.rows()));
  for (int i = 0; i < result.rows(); ++i) {
    if (result.isNull(i, id)) continue;  // the one row of an empty list
    ChatSummary chat;
    chat.id = result.value(i, id);
    chat.title = view(result, i, title);
    chat.updatedAt = result.value(i, updatedAt);
    chat.marker = view(result, i, marker);
    chat.lastSeenAt = view(result, i, lastSeenAt);
    chat.pinned = flag(result, i, pinned);
    chat.deletedAt = view(result, i, deletedAt);
    list.chats.push_back(chat);
  }
  list.rows = std::move(result);
  return list;
}

Statement findChatStatement(const std::string& token, const std::string& chatId) {
  return {kFindChatSql, {token, chatId}};
}

ChatLookup readChatLookup(streamlock::PgResult result) {
  ChatLookup lookup;
  if (result.rows() == 0) return lookup;
  lookup.authenticated = flag(result, 0, result.column("authenticated"));
  const int id = result.column("id");
  if (!lookup.authenticated || result.isNull(0, id)) return lookup;
  ChatDetail chat;
  chat.id = result.value(0, id);
  chat.title = view(result, 0, result.column("title"));
  chat.messagesJson = result.value(0, result.column("messages"));
  chat.resourcesJson = result.value(0, result.column("resources"));
  chat.marker = view(result, 0, result.column("marker"));
  chat.createdAt = result.value(0, result.column("created_at"));
  chat.updatedAt = result.value(0, result.column("updated_at"));
  lookup.chat = chat;
  lookup.rows = std::move(result);
  return lookup;
}

Statement authenticateStatement(const std::string& token) { return {kAuthenticateSql, {token}}; }

bool readAuthenticated(const streamlock::PgResult& result) {
  return result.rows() == 1 && flag(result, 0, result.column("authenticated"));
}

void pingDatabase(streamlock::PgPool& db, std::chrono::milliseconds timeout) {
  db.execute("SELECT 1", {}, timeout);
}

bool isUuid(std::string_view text) noexcept {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    const auto c = static_cast<unsigned char>(text[i]);
    if (dash ? c != '-' : std::isxdigit(c) == 0) return false;
  }
  return true;
}

}  // namespace mothership
