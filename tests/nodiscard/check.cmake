# [case 7] of writer_lifecycle: compiles one snippet of this directory against streamlock's public
# headers, syntax only, with discarded [[nodiscard]] results as errors, and checks the outcome.
#
#   cmake -DCXX=<compiler> -DSOURCE_INCLUDE=<dir> -DBINARY_INCLUDE=<dir> -DSNIPPET=<file.cpp>
#         -DEXPECT=compiles|nodiscard [-DMENTIONS=<regex>] -P check.cmake
#
# EXPECT=compiles: the snippet must compile. EXPECT=nodiscard: it must fail, with a diagnostic
# about the discarded result ("nodiscard" / "ignoring return value") that matches MENTIONS (the
# function or type whose result was dropped).
foreach(variable CXX SOURCE_INCLUDE BINARY_INCLUDE SNIPPET EXPECT)
  if(NOT DEFINED ${variable} OR "${${variable}}" STREQUAL "")
    message(FATAL_ERROR "check.cmake: -D${variable}=... is missing")
  endif()
endforeach()
foreach(header "${SOURCE_INCLUDE}/streamlock/client.h" "${BINARY_INCLUDE}/streamlock/version.h" "${SNIPPET}")
  if(NOT EXISTS "${header}")
    message(FATAL_ERROR "check.cmake: ${header} does not exist")
  endif()
endforeach()

execute_process(
  COMMAND "${CXX}" -std=c++17 -fsyntax-only -Werror=unused-result -Werror=unused-value
          "-I${SOURCE_INCLUDE}" "-I${BINARY_INCLUDE}" "${SNIPPET}"
  RESULT_VARIABLE result
  OUTPUT_VARIABLE output
  ERROR_VARIABLE output
  TIMEOUT 120)

get_filename_component(name "${SNIPPET}" NAME)
if(EXPECT STREQUAL "compiles")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${name} must compile (it uses every result), but the compiler said (${result}):\n${output}")
  endif()
  message(STATUS "${name} compiles")
elseif(EXPECT STREQUAL "nodiscard")
  if(result EQUAL 0)
    message(FATAL_ERROR "${name} compiled, but it discards a result that must be [[nodiscard]]")
  endif()
  if(NOT output MATCHES "nodiscard|ignoring return(ed)? value")
    message(FATAL_ERROR "${name} failed to compile, but not on a discarded [[nodiscard]] result:\n${output}")
  endif()
  if(DEFINED MENTIONS AND NOT output MATCHES "${MENTIONS}")
    message(FATAL_ERROR "${name}: the diagnostic does not name ${MENTIONS}:\n${output}")
  endif()
  message(STATUS "${name} is refused:\n${output}")
else()
  message(FATAL_ERROR "check.cmake: EXPECT must be compiles or nodiscard, not ${EXPECT}")
endif()
