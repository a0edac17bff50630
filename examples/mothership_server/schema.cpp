#include "schema.h"

#include <array>
#include <random>

#include <fmt/format.h>
#include <streamlock/error.h>
#include <streamlock/postgres.h>

namespace mothership {
namespace {

struct Table {
  const char* name;
  const char* create;
};

// In dependency order. The same definitions as the contract's demo schema.
constexpr std::array<Table, 5> kTables{{
    {"users", "CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL)"},
    {"workspaces", "CREATE TABLE IF NOT EXISTS workspaces (id text PRIMARY KEY, name text NOT NULL, archived_at timestamptz)"},
    {"workspace_members",
     "CREATE TABLE IF NOT EXISTS workspace_members ("
     " workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,"
     " user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
     " PRIMARY KEY (workspace_id, user_id))"},
    {"api_keys",
     "CREATE TABLE IF NOT EXISTS api_keys ("
     " token_sha256 text PRIMARY KEY,"
     " user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
     " revoked_at timestamptz)"},
    {"copilot_chats",
     "CREATE TABLE IF NOT EXISTS copilot_chats ("
     " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
     " user_id text NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
     " workspace_id text REFERENCES workspaces(id) ON DELETE CASCADE,"
     " type text NOT NULL DEFAULT 'copilot' CHECK (type IN ('copilot', 'mothership')),"
     " title text,"
     " conversation_id text,"
     " messages jsonb NOT NULL DEFAULT '[]',"
     " resources jsonb NOT NULL DEFAULT '[]',"
     " last_seen_at timestamptz,"
     " pinned boolean NOT NULL DEFAULT false,"
     " deleted_at timestamptz,"
     " created_at timestamptz NOT NULL DEFAULT now(),"
     " updated_at timestamptz NOT NULL DEFAULT now())"},
}};

constexpr const char* kIndexName = "copilot_chats_user_workspace_idx";
constexpr const char* kCreateIndex =
    "CREATE INDEX IF NOT EXISTS copilot_chats_user_workspace_idx ON copilot_chats (user_id, workspace_id)";

bool exists(streamlock::PgPool& db, const char* relation) {
  const auto result = db.execute("SELECT to_regclass($1::text) IS NOT NULL AS present", {std::string(relation)});
  return result.rows() == 1 && result.value(0, 0) == "t";
}

std::string randomToken() {
  std::random_device random;
  std::string token = "demo_";
  for (int i = 0; i < 8; ++i) token += fmt::format("{:08x}", random());
  return token;
}

}  // namespace

void applySchema(streamlock::PgPool& db) {
  for (const auto& table : kTables) {
    if (!exists(db, table.name)) db.execute(table.create);
  }
  if (!exists(db, kIndexName)) {
    try {
      db.execute(kCreateIndex);
    } catch (const streamlock::Error& error) {
      // The table belongs to someone else: the index is theirs to add; the server works without it.
      if (error.sqlstate() != "42501") throw;
      fmt::print(stderr, "mothership_server: warning: cannot create {} (no privilege)\n", kIndexName);
    }
  }
}

DemoSeed seedDemo(streamlock::PgPool& db) {
  DemoSeed seed;
  seed.userId = "demo-user";
  seed.workspaceId = "demo-workspace";
  seed.token = randomToken();

  db.execute("INSERT INTO users (id, email, name) VALUES ($1::text, 'demo@example.com', 'Demo User') "
             "ON CONFLICT DO NOTHING",
             {seed.userId});
  db.execute("INSERT INTO workspaces (id, name) VALUES ($1::text, 'Demo workspace') ON CONFLICT DO NOTHING",
             {seed.workspaceId});
  db.execute("INSERT INTO workspace_members (workspace_id, user_id) VALUES ($1::text, $2::text) "
             "ON CONFLICT DO NOTHING",
             {seed.workspaceId, seed.userId});
  db.execute("INSERT INTO api_keys (token_sha256, user_id) "
             "VALUES (encode(sha256(convert_to($1::text, 'UTF8')), 'hex'), $2::text)",
             {seed.token, seed.userId});

  // Fixed ids, so that seeding twice adds no duplicates and the demo script knows a chat id.
  db.execute(
      "INSERT INTO copilot_chats (id, user_id, workspace_id, type, title, pinned, messages, updated_at)\n"
      "SELECT v.id::uuid, $1::text, $2::text, 'mothership', v.title, v.pinned,\n"
      "  jsonb_build_array(jsonb_build_object('role', 'user', 'content', v.prompt)),\n"
      "  now() - make_interval(mins => v.age)\n"
      "FROM (VALUES\n"
      "  ('5eed0000-0000-4000-8000-000000000001', 'Launch plan for Q3', false, 'Draft a launch plan', 1),\n"
      "  ('5eed0000-0000-4000-8000-000000000002', 'Customer interview notes', false, 'Summarise the interviews', 5),\n"
      "  ('5eed0000-0000-4000-8000-000000000003', 'Pricing experiment', true, 'Design a pricing test', 30),\n"
      "  ('5eed0000-0000-4000-8000-000000000004', 'Onboarding emails', false, 'Write three emails', 60),\n"
      "  ('5eed0000-0000-4000-8000-000000000005', 'Incident retro', false, 'Outline the retro', 180),\n"
      "  ('5eed0000-0000-4000-8000-000000000006', 'Hiring scorecard', false, 'Make a scorecard', 600))\n"
      "  AS v(id, title, pinned, prompt, age)\n"
      "ON CONFLICT (id) DO NOTHING",
      {seed.userId, seed.workspaceId});
  for (int i = 1; i <= 6; ++i) seed.chatIds.push_back(fmt::format("5eed0000-0000-4000-8000-00000000000{}", i));
  return seed;
}

}  // namespace mothership
