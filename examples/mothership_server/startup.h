#pragma once

// The startup checks: PostgreSQL and Redis, once each, and a log line about what was found.

namespace streamlock {
class Client;
}

namespace mothership {

// Logs what PostgreSQL (its database and version) and Redis (verified, unknown and why, or
// disabled) answered. Redis unknown is a warning, not a failure: the server starts, its reads
// answer unknown and /healthz says degraded until Redis answers. Throws streamlock::Error when
// PostgreSQL does not answer.
void reportServices(streamlock::Client& client);

}  // namespace mothership
