// Prints the demo server's own SQL, byte for byte, so that the pgbench floor runs the very text
// the server prepares: this file includes examples/mothership_server/queries.cpp, whose statements
// live in an anonymous namespace and are reachable from this translation unit only.
//
//   print_sql list    the list endpoint's statement ($1 token, $2 workspace id, $3 archived)
//   print_sql chat    the single-chat endpoint's statement ($1 token, $2 chat id)
//
// Built by bench/load.sh against the library of its Release build (queries.cpp calls PgPool).

#include <cstdio>
#include <cstring>

#include "../../examples/mothership_server/queries.cpp"

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "list") == 0) {
    std::fputs(mothership::kListChatsSql, stdout);
  } else if (argc == 2 && std::strcmp(argv[1], "chat") == 0) {
    std::fputs(mothership::kFindChatSql, stdout);
  } else {
    std::fputs("usage: print_sql list|chat\n", stderr);
    return 2;
  }
  return 0;
}
