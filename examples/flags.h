#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace examples {

// Reads an environment variable; empty when unset. Injected so that parsing stays testable.
using EnvLookup = std::function<std::string(const char* name)>;

// A flag of a program, for the environment variables that can also set it.
struct FlagSpec {
  std::string_view flag;  // "--database-url"
  bool takesValue;        // false for a switch such as "--seed-demo"
};

// The variable that sets a flag: "--database-url" -> "STREAMLOCK_DATABASE_URL".
inline std::string environmentName(std::string_view flag) {
  std::string name = "STREAMLOCK_";
  for (const char c : flag.substr(flag.find_first_not_of('-'))) {
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return name;
}

// The "Environment" section of a --help text: each flag's variable.
inline std::string environmentHelp(const std::vector<FlagSpec>& specs) {
  std::string text = "Environment: every flag can also be set by a variable; a flag on the command line wins.\n";
  for (const auto& spec : specs) {
    std::string line = "  " + environmentName(spec.flag);
    line.resize(std::max<std::size_t>(line.size() + 2, 32), ' ');
    text += line + std::string(spec.flag) + (spec.takesValue ? "\n" : " (1 or 0)\n");
  }
  return text;
}

// Walks a command line of "--flag value" and "--flag=value" arguments, for the demo programs,
// after the arguments taken from the environment (flagsFromEnvironment).
class FlagReader {
 public:
  FlagReader(int argc, const char* const* argv, std::vector<std::string> fromEnvironment = {})
      : args_(std::move(fromEnvironment)), fromEnvironment_(args_.size()) {
    for (int i = 1; i < argc; ++i) args_.emplace_back(argv[i]);
  }

  // Moves to the next argument; false after the last one.
  bool next() {
    if (++index_ >= args_.size()) return false;
    name_ = args_[index_];
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
  // Where the flag came from, for messages: the flag, or the variable that stood for it.
  std::string source() const {
    return index_ < fromEnvironment_ ? environmentName(name_) : std::string(name_);
  }

  // The flag's value: the text after '=', else the next argument (consumed). False when there is none.
  bool takeValue(std::string_view& value) {
    if (!inlineValue_) {
      if (index_ + 1 >= args_.size()) return false;
      value_ = args_[++index_];
      inlineValue_ = true;
    }
    value = value_;
    return true;
  }

 private:
  std::vector<std::string> args_;  // the environment's, then the command line's
  std::size_t fromEnvironment_;
  std::size_t index_ = static_cast<std::size_t>(-1);
  std::string_view name_;
  std::string_view value_;
  bool inlineValue_ = false;
};

// The arguments that the STREAMLOCK_* variables stand for, for the flags that the command line
// (argc, argv) does not give: "--flag=value" for a value flag whose variable is set and not empty,
// "--switch" for a switch whose variable is 1, true, yes or on (0, false, no, off: nothing).
// Returns false, with `error` naming the variable, for any other switch value.
inline bool flagsFromEnvironment(const std::vector<FlagSpec>& specs, const EnvLookup& env, int argc,
                                 const char* const* argv, std::vector<std::string>& args, std::string& error) {
  // The flags on the command line win: their variables are not read at all.
  std::vector<std::string_view> given;
  FlagReader commandLine(argc, argv);
  while (commandLine.next()) {
    given.push_back(commandLine.name());
    const auto spec = std::find_if(specs.begin(), specs.end(),
                                   [&](const FlagSpec& s) { return s.flag == commandLine.name(); });
    std::string_view skipped;
    if (spec != specs.end() && spec->takesValue) commandLine.takeValue(skipped);
  }
  for (const auto& spec : specs) {
    if (std::find(given.begin(), given.end(), spec.flag) != given.end()) continue;
    const std::string name = environmentName(spec.flag);
    const std::string value = env(name.c_str());
    if (value.empty()) continue;
    if (spec.takesValue) {
      args.push_back(std::string(spec.flag) + "=" + value);
    } else if (value == "1" || value == "true" || value == "yes" || value == "on") {
      args.emplace_back(spec.flag);
    } else if (!(value == "0" || value == "false" || value == "no" || value == "off")) {
      error = name + " wants 1 or 0";
      return false;
    }
  }
  return true;
}

}  // namespace examples
