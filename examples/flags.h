#pragma once

#include <string_view>

namespace examples {

// Walks a command line of "--flag value" and "--flag=value" arguments, for the demo programs.
class FlagReader {
 public:
  FlagReader(int argc, const char* const* argv) : argc_(argc), argv_(argv) {}

  // Moves to the next argument; false after the last one.
  bool next() {
    if (++index_ >= argc_) return false;
    name_ = argv_[index_];
    value_ = {};
    inlineValue_ = false;
    if (const auto eq = name_.find('='); name_.rfind("--", 0) == 0 && eq != std::string_view::npos) {
      value_ = name_.substr(eq + 1);
      name_ = name_.substr(0, eq);
      inlineValue_ = true;
    }
    return true;
  }

  // The flag, without any "=value".
  std::string_view name() const { return name_; }
  // Whether the value came as "--flag=value".
  bool hasInlineValue() const { return inlineValue_; }

  // The flag's value: the text after '=', else the next argument (consumed). False when there is none.
  bool takeValue(std::string_view& value) {
    if (!inlineValue_) {
      if (index_ + 1 >= argc_) return false;
      value_ = argv_[++index_];
      inlineValue_ = true;
    }
    value = value_;
    return true;
  }

 private:
  int argc_;
  const char* const* argv_;
  int index_ = 0;
  std::string_view name_;
  std::string_view value_;
  bool inlineValue_ = false;
};

}  // namespace examples
