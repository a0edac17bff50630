include_guard(GLOBAL)

# Warnings and sanitizers for streamlock's own targets; never applied to consumers.
function(streamlock_target_defaults target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE
      -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
      -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wnull-dereference -Wdouble-promotion
      -Wformat=2 -Wimplicit-fallthrough)
    if(STREAMLOCK_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
    if(STREAMLOCK_SANITIZE)
      list(JOIN STREAMLOCK_SANITIZE "," sanitizers)
      target_compile_options(${target} PRIVATE -fsanitize=${sanitizers} -fno-omit-frame-pointer -fno-sanitize-recover=all)
      target_link_options(${target} PRIVATE -fsanitize=${sanitizers})
    endif()
  endif()
endfunction()

# libFuzzer (clang only; tests/fuzz uses these). The sanitizers themselves come from
# STREAMLOCK_SANITIZE through streamlock_target_defaults; these add only the fuzzer part.

# Coverage instrumentation for a library that fuzzers link (e.g. streamlock), so that libFuzzer is
# guided by the branches inside lib/ too; the library gets no main() and no libFuzzer runtime.
function(streamlock_fuzzer_instrumentation target)
  _streamlock_require_clang("streamlock_fuzzer_instrumentation(${target})")
  target_compile_options(${target} PRIVATE -fsanitize=fuzzer-no-link)
  target_link_options(${target} PRIVATE -fsanitize=fuzzer-no-link)
endfunction()

# A libFuzzer executable: instrumented, linked with libFuzzer's runtime and its main().
function(streamlock_fuzzer_executable target)
  _streamlock_require_clang("streamlock_fuzzer_executable(${target})")
  target_compile_options(${target} PRIVATE -fsanitize=fuzzer -fno-omit-frame-pointer)
  target_link_options(${target} PRIVATE -fsanitize=fuzzer)
endfunction()

function(_streamlock_require_clang what)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "${what}: libFuzzer needs clang, and this build uses ${CMAKE_CXX_COMPILER_ID} "
      "(${CMAKE_CXX_COMPILER}). Configure a fresh build directory with CXX=clang++, or run tests/run.sh --fuzz.")
  endif()
endfunction()
