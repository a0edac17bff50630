#include "json.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

namespace mothership {
namespace {

// Whether any of the 8 bytes of word needs escaping in a JSON string: a control byte (< 0x20), '"'
// or '\\'. Bytes >= 0x80 (UTF-8) never do. The classic "has a byte less than n" and "has a zero
// byte" word tricks; a word that has one goes to the byte loop, which finds it.
constexpr bool needsEscape(std::uint64_t word) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  const auto hasZero = [](std::uint64_t v) { return ((v - kOnes) & ~v & kHighs) != 0; };
  const bool control = ((word - kOnes * 0x20) & ~word & kHighs) != 0;
  return control || hasZero(word ^ (kOnes * '"')) || hasZero(word ^ (kOnes * '\\'));
}

// The position of the first byte of text at or after `from` that a JSON string must escape, or
// text.size(): 16 bytes per step with SSE2 (every x86-64), then 8 with needsEscape, then one.
std::size_t firstToEscape(std::string_view text, std::size_t from) {
  std::size_t i = from;
#if defined(__SSE2__)
  const __m128i lastControl = _mm_set1_epi8(0x1f);
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i backslash = _mm_set1_epi8('\\');
  while (text.size() - i >= 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(text.data() + i));
    // Unsigned bytes <= 0x1f are those whose maximum with 0x1f is 0x1f.
    const __m128i control = _mm_cmpeq_epi8(_mm_max_epu8(bytes, lastControl), lastControl);
    const __m128i special = _mm_or_si128(_mm_cmpeq_epi8(bytes, quote), _mm_cmpeq_epi8(bytes, backslash));
    const int mask = _mm_movemask_epi8(_mm_or_si128(control, special));
    if (mask != 0) return i + static_cast<std::size_t>(__builtin_ctz(static_cast<unsigned>(mask)));
    i += 16;
  }
#endif
  while (text.size() - i >= 8) {
    std::uint64_t word;
    std::memcpy(&word, text.data() + i, sizeof word);
    if (needsEscape(word)) break;
    i += 8;
  }
  for (; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == '"' || c == '\\') return i;
  }
  return i;
}

}  // namespace

JsonWriter::JsonWriter(std::size_t estimate) : text_(std::max<std::size_t>(estimate, 64), '\0'), at_(text_.data()) {}

void JsonWriter::string(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  room(6 * text.size() + 2);  // the longest escape, \u00XX, is 6 bytes
  *at_++ = '"';
  std::size_t copied = 0;
  for (std::size_t i = firstToEscape(text, 0); i < text.size(); i = firstToEscape(text, copied)) {
    copy(text.substr(copied, i - copied));
    const auto c = static_cast<unsigned char>(text[i]);
    copied = i + 1;
    switch (c) {
      case '"': copy("\\\""); break;
      case '\\': copy("\\\\"); break;
      case '\b': copy("\\b"); break;
      case '\f': copy("\\f"); break;
      case '\n': copy("\\n"); break;
      case '\r': copy("\\r"); break;
      case '\t': copy("\\t"); break;
      default: {
        const char escape[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        copy({escape, sizeof escape});
      }
    }
  }
  copy(text.substr(copied));
  *at_++ = '"';
}

void JsonWriter::stringOrNull(const std::optional<std::string_view>& text) {
  if (text) {
    string(*text);
  } else {
    raw("null");
  }
}

std::string JsonWriter::take() && {
  text_.resize(static_cast<std::size_t>(at_ - text_.data()));
  return std::move(text_);
}

void JsonWriter::grow(std::size_t bytes) {
  const auto used = static_cast<std::size_t>(at_ - text_.data());
  text_.resize(std::max(2 * text_.size(), used + bytes));
  at_ = text_.data() + used;
}

std::string errorBody(std::string_view message) {
  JsonWriter json(message.size() + 16);
  json.raw(R"({"error":)");
  json.string(message);
  json.raw("}");
  return std::move(json).take();
}

}  // namespace mothership
