#pragma once

// The demo schema, and the demo data that --seed-demo inserts.

#include <string>
#include <vector>

namespace streamlock {
class PgPool;
}

namespace mothership {

// Creates the demo tables that do not exist yet. Tables that exist (perhaps created by someone
// else, in a schema where this user may not CREATE) are left alone. Throws streamlock::Error.
void applySchema(streamlock::PgPool& db);

struct DemoSeed {
  std::string userId;
  std::string workspaceId;
  std::vector<std::string> chatIds;
  std::string token;  // a fresh bearer token for userId
};

// Inserts the demo user, workspace and chats (once) and a new API key. Throws streamlock::Error.
DemoSeed seedDemo(streamlock::PgPool& db);

}  // namespace mothership
