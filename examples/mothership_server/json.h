#pragma once

// JSON text written by hand into one buffer: the response bodies of the routes. Earns its place in
// the benchmarks: a DOM of 50 nlohmann::ordered_json objects per list cost a third of the request's
// CPU (bench/load/tuning.md); strings are escaped byte for byte as nlohmann::json's dump() does
// (pinned by the server test "titles are escaped exactly as nlohmann::json dumps them").

#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace mothership {

class JsonWriter {
 public:
  // estimate: the expected size of the text, reserved up front (it grows when short).
  explicit JsonWriter(std::size_t estimate = 64);

  // Bytes copied as they are (JSON punctuation and keys the caller wrote). Inline: a list writes
  // hundreds of these.
  void raw(std::string_view bytes) {
    room(bytes.size());
    copy(bytes);
  }

  // A JSON string of text (valid UTF-8, as PostgreSQL text in a UTF8 database is): '"', '\\' and
  // control characters escaped exactly as nlohmann::json's dump(), the runs between them copied whole.
  void string(std::string_view text);

  // string(*text), or null.
  void stringOrNull(const std::optional<std::string_view>& text);

  // The text written so far; the writer is spent.
  std::string take() &&;

 private:
  // Within room already made.
  void copy(std::string_view bytes) {
    std::memcpy(at_, bytes.data(), bytes.size());
    at_ += bytes.size();
  }
  void room(std::size_t bytes) {
    if (static_cast<std::size_t>(text_.data() + text_.size() - at_) < bytes) grow(bytes);
  }
  void grow(std::size_t bytes);

  std::string text_;
  char* at_;
};

// {"error":"<message>"}: the body of every error answer but the chat route's 404.
std::string errorBody(std::string_view message);

}  // namespace mothership
