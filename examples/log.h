#pragma once

// The log lines of the demo programs, as plain text or as JSON (--log-format). Every line a
// program writes goes through here: startup, the access log, the library's logger, shutdown.
//
// Text: the line as given (the formats the programs always had).
// JSON: one object per line, {"ts":"2026-12-01T12:00:00.123Z","level":"info","event":"...", ...fields},
// the time in UTC with milliseconds. Callers never pass a token or a password as a field.
//
// Each line is one write(2), without stdio's lock: concurrent lines never interleave.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <streamlock/log.h>

namespace examples {

enum class LogFormat { Text, Json };

// "text" or "json"; false for anything else.
bool parseLogFormat(std::string_view text, LogFormat& format);

// Set once, at startup, before any thread logs. Text until then.
void setLogFormat(LogFormat format);
LogFormat logFormat();

enum class LogStream { Stdout, Stderr };

// The fields of a JSON line, in order; ignored in text format.
using LogFields = nlohmann::ordered_json;

// Writes one line: `text` in text format, else a JSON object with `event` and `fields`.
void logLine(streamlock::LogLevel level, std::string_view event, std::string_view text, const LogFields& fields = {},
             LogStream stream = LogStream::Stderr) noexcept;

// One access-log line: route is a template, never a raw path; method as httplib parsed it.
//   text: access method=GET route=/api/mothership/chats/{chatId} status=200 duration_ms=1.600
//   json: {"ts":...,"level":"info","event":"access","method":"GET","route":...,"status":200,"duration_ms":1.6}
void logAccess(std::string_view method, std::string_view route, int status, double seconds) noexcept;

// From holdAccessLog() on, the calling thread's access-log lines are held, and written together,
// whole, by each flushAccessLog() (and whenever 64 KiB are held): the HTTP event loop flushes
// before it waits, so that the requests it answers in one wake-up cost one write(2) between them.
void holdAccessLog() noexcept;
void flushAccessLog() noexcept;

// The library's logger (Options::logger), Info and above: text as streamlock::logToStderr writes it,
// JSON with event "streamlock" and the message in "message".
void logFromLibrary(streamlock::LogLevel level, std::string_view message) noexcept;

// A time as the JSON lines show it: 2026-12-01T12:00:00.123Z (UTC, milliseconds truncated).
std::string logTimestamp(long long unixMilliseconds);

}  // namespace examples
