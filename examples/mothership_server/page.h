#pragma once

#include <string_view>

namespace mothership {

// The tile page served at GET /: one self-contained HTML document, no external assets.
std::string_view tilePage() noexcept;

}  // namespace mothership
