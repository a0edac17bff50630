#include "queries.h"

#include <cctype>

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

// Text-format values of one result row, by column name.
class Row {
 public:
  Row(const streamlock::PgResult& result, int row) : result_(result), row_(row) {}
  std::optional<std::string> optional(const char* name) const { return result_.optional(row_, index(name)); }
  std::string text(const char* name) const { return std::string(result_.value(row_, index(name))); }
  bool flag(const char* name) const { return result_.value(row_, index(name)) == "t"; }
  bool isNull(const char* name) const { return result_.isNull(row_, index(name)); }

 private:
  int index(const char* name) const { return result_.column(name); }
  const streamlock::PgResult& result_;
  int row_;
};

}  // namespace

ChatList listChats(streamlock::PgPool& db, const std::string& token, const std::string& workspaceId,
                   Scope scope) {
  auto result =
      db.execute(kListChatsSql, {token, workspaceId, scope == Scope::Archived ? "true" : "false"});
  ChatList list;
  if (result.rows() == 0) return list;
  const Row first(result, 0);
  if (!first.flag("authenticated")) return list;
  if (!first.flag("allowed")) {
    list.access = Access::Forbidden;
    return list;
  }
  list.access = Access::Granted;
  // Column numbers looked up once, not once per row and field.
  const int id = result.column("id"), title = result.column("title"), updatedAt = result.column("updated_at"),
            marker = result.column("marker"), lastSeenAt = result.column("last_seen_at"),
            pinned = result.column("pinned"), deletedAt = result.column("deleted_at");
  const auto view = [&result](int row, int column) -> std::optional<std::string_view> {
    if (result.isNull(row, column)) return std::nullopt;
    return result.value(row, column);
  };
  list.chats.reserve(static_cast<std::size_t>(result.rows()));
  for (int i = 0; i < result.rows(); ++i) {
    if (result.isNull(i, id)) continue;  // the one row of an empty list
    ChatSummary chat;
    chat.id = result.value(i, id);
    chat.title = view(i, title);
    chat.updatedAt = result.value(i, updatedAt);
    chat.marker = view(i, marker);
    chat.lastSeenAt = view(i, lastSeenAt);
    chat.pinned = result.value(i, pinned) == "t";
    chat.deletedAt = view(i, deletedAt);
    list.chats.push_back(chat);
  }
  list.rows = std::move(result);
  return list;
}

ChatLookup findChat(streamlock::PgPool& db, const std::string& token, const std::string& chatId) {
  const auto result = db.execute(kFindChatSql, {token, chatId});
  ChatLookup lookup;
  if (result.rows() == 0) return lookup;
  const Row row(result, 0);
  lookup.authenticated = row.flag("authenticated");
  if (!lookup.authenticated || row.isNull("id")) return lookup;
  ChatDetail chat;
  chat.id = row.text("id");
  chat.title = row.optional("title");
  chat.messagesJson = row.text("messages");
  chat.resourcesJson = row.text("resources");
  chat.marker = row.optional("marker");
  chat.createdAt = row.text("created_at");
  chat.updatedAt = row.text("updated_at");
  lookup.chat = std::move(chat);
  return lookup;
}

bool isValidToken(streamlock::PgPool& db, const std::string& token) {
  const auto result = db.execute(kAuthenticateSql, {token});
  return result.rows() == 1 && Row(result, 0).flag("authenticated");
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
