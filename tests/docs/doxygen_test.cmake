# The API reference builds from the repository's Doxyfile with no warning, run by ctest (docs.doxygen):
#
#   cmake -DDOXYGEN=<doxygen> -DSOURCE_DIR=<repository> -DOUTPUT_DIR=<scratch dir> -P doxygen_test.cmake
#
# The Doxyfile runs as it is, from the repository's root, with only its output moved to OUTPUT_DIR
# (so that the test writes nothing into the source tree). Its WARN_AS_ERROR = FAIL_ON_WARNINGS
# fails doxygen on any warning; any output at all (QUIET = YES prints only warnings) fails the test too.
cmake_minimum_required(VERSION 3.16)

foreach(var DOXYGEN SOURCE_DIR OUTPUT_DIR)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "doxygen_test.cmake: -D${var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE "${OUTPUT_DIR}")
file(MAKE_DIRECTORY "${OUTPUT_DIR}")
file(READ "${SOURCE_DIR}/Doxyfile" doxyfile)
file(WRITE "${OUTPUT_DIR}/Doxyfile" "${doxyfile}\nOUTPUT_DIRECTORY = \"${OUTPUT_DIR}\"\n")

execute_process(COMMAND "${DOXYGEN}" "${OUTPUT_DIR}/Doxyfile"
  WORKING_DIRECTORY "${SOURCE_DIR}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(STRIP "${out}${err}" said)
if(NOT rc EQUAL 0 OR NOT said STREQUAL "")
  message(FATAL_ERROR "doxygen Doxyfile: exit ${rc}, and these warnings (none allowed):\n${said}")
endif()
foreach(page index.html classstreamlock_1_1Client.html structstreamlock_1_1Metrics.html)
  if(NOT EXISTS "${OUTPUT_DIR}/html/${page}")
    message(FATAL_ERROR "doxygen wrote no html/${page}")
  endif()
endforeach()
message(STATUS "doxygen Doxyfile: no warnings; ${OUTPUT_DIR}/html/index.html")
