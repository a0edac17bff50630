# The README's C++ snippets compile and link against this build, so that they cannot rot (ctest
# readme.snippets, label package):
#
#   cmake -DREADME=<README.md> -DWORK_DIR=<scratch dir> -DCXX_COMPILER=<c++> -DINCLUDE_DIRS=<dirs>
#         -DLIBRARY=<libstreamlock file> -DLIBRARY_TYPE=SHARED_LIBRARY|STATIC_LIBRARY
#         [-DCXX_FLAGS=... -DLINKER_FLAGS=...] -P readme_snippets.cmake
#
# Every ```cpp block of the README is a whole program, as a reader would copy it: each one is
# written to WORK_DIR/snippet-<n>.cpp, built with warnings as errors, and run. They name servers at
# their default addresses (127.0.0.1:6379, the local PostgreSQL), which the test does not start: so
# each must handle Redis and PostgreSQL being down, and end within 20 s with exit status 0 or 1,
# never a crash or an uncaught exception.
cmake_minimum_required(VERSION 3.16)

foreach(var README WORK_DIR CXX_COMPILER INCLUDE_DIRS LIBRARY LIBRARY_TYPE)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "readme_snippets.cmake: -D${var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
file(READ "${README}" text)

set(include_flags "")
foreach(dir IN LISTS INCLUDE_DIRS)
  list(APPEND include_flags "-I${dir}")
endforeach()
# The C libraries are linked by a shared libstreamlock; a static one leaves them to its consumer.
set(libraries "${LIBRARY}")
if(LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  list(APPEND libraries -lhiredis -lpq -lssl -lcrypto -lfmt)
else()
  # Run from the build tree: find the library where it was built.
  get_filename_component(library_dir "${LIBRARY}" DIRECTORY)
  list(APPEND libraries "-Wl,-rpath,${library_dir}")
endif()
separate_arguments(extra_compile UNIX_COMMAND "${CXX_FLAGS}")
separate_arguments(extra_link UNIX_COMMAND "${LINKER_FLAGS}")

# Walk the text with string(FIND): the snippets hold semicolons, which a CMake list would split.
set(open "```cpp\n")
set(count 0)
string(FIND "${text}" "${open}" at)
while(NOT at EQUAL -1)
  string(LENGTH "${open}" open_length)
  math(EXPR start "${at} + ${open_length}")
  string(SUBSTRING "${text}" ${start} -1 rest)
  string(FIND "${rest}" "\n```" end)
  if(end EQUAL -1)
    message(FATAL_ERROR "${README}: a ```cpp block is not closed")
  endif()
  string(SUBSTRING "${rest}" 0 ${end} snippet)
  math(EXPR count "${count} + 1")
  set(source "${WORK_DIR}/snippet-${count}.cpp")
  file(WRITE "${source}" "${snippet}\n")

  execute_process(
    COMMAND "${CXX_COMPILER}" -std=c++17 -Wall -Wextra -Werror ${extra_compile} ${include_flags}
            "${source}" -o "${WORK_DIR}/snippet-${count}" ${libraries} -pthread ${extra_link}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "README.md's C++ snippet ${count} (${source}) does not build:\n${out}${err}")
  endif()
  execute_process(
    COMMAND "${WORK_DIR}/snippet-${count}"
    TIMEOUT 20
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT (rc STREQUAL "0" OR rc STREQUAL "1"))
    message(FATAL_ERROR "README.md's C++ snippet ${count} (${source}) did not end with status 0 or 1 "
                        "with the servers down (result: ${rc}):\n${out}${err}")
  endif()
  message(STATUS "snippet ${count}: builds, and runs with the servers down (status ${rc})")

  math(EXPR next "${end} + 4")
  string(SUBSTRING "${rest}" ${next} -1 text)
  string(FIND "${text}" "${open}" at)
endwhile()

if(count EQUAL 0)
  message(FATAL_ERROR "${README} has no ```cpp block")
endif()
message(STATUS "${count} README snippets build and run")
