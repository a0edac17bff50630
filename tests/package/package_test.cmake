# Packaging smoke test, run by ctest in script mode (see CMakeLists.txt next to this file):
#
#   cmake -DMODE=find_package|add_subdirectory|library_alone -DSOURCE_DIR=<streamlock source>
#         -DBINARY_DIR=<its build> -DCONSUMER_DIR=<consumer project> -DWORK_DIR=<scratch dir> -DVERSION=<x.y.z>
#         [-DGENERATOR=... -DMAKE_PROGRAM=... -DCXX_COMPILER=... -DBUILD_TYPE=... -DCXX_FLAGS=...
#          -DLINKER_FLAGS=... -DLIBRARY_TYPE=SHARED_LIBRARY|STATIC_LIBRARY -DLIBDIR=...
#          -DPKG_CONFIG=<pkg-config executable> -DEXAMPLES=ON|OFF]
#         -P package_test.cmake
#
# find_package:     installs the build into WORK_DIR/prefix (with the examples' programs when they
#                   are built: they must answer --version from <prefix>/bin), then builds and runs the
#                   consumer against that prefix, against the build tree's export, and through
#                   pkg-config.
# add_subdirectory: builds and runs the consumer with streamlock's source tree as a subdirectory.
# library_alone:    builds and installs the library alone with the README's commands, as the other
#                   library type than this build's (static for a shared build), then builds and runs
#                   the consumer through find_package and through pkg-config (with and without
#                   --static) against that install: both library types are checked by one ctest run.
cmake_minimum_required(VERSION 3.16)

foreach(var MODE SOURCE_DIR BINARY_DIR CONSUMER_DIR WORK_DIR VERSION)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "package_test.cmake: -D${var}=... is required")
  endif()
endforeach()

# Runs a command, echoing it; stops the test when it fails.
function(run)
  execute_process(COMMAND ${ARGN} COMMAND_ECHO STDOUT RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "FAILED (${rc}): ${ARGN}")
  endif()
endfunction()

# Configures and builds the consumer in WORK_DIR/<name> with the given -D options, then runs it
# (with extra environment settings in ENV) and checks that it prints streamlock's version.
function(build_and_run_consumer name)
  cmake_parse_arguments(arg "" "" "OPTIONS;ENV" ${ARGN})
  set(dir "${WORK_DIR}/${name}")
  set(configure "${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${dir}")
  if(GENERATOR)
    list(APPEND configure -G "${GENERATOR}")
  endif()
  foreach(pair IN ITEMS "MAKE_PROGRAM;CMAKE_MAKE_PROGRAM" "CXX_COMPILER;CMAKE_CXX_COMPILER"
                        "BUILD_TYPE;CMAKE_BUILD_TYPE" "CXX_FLAGS;CMAKE_CXX_FLAGS"
                        "LINKER_FLAGS;CMAKE_EXE_LINKER_FLAGS" "LINKER_FLAGS;CMAKE_SHARED_LINKER_FLAGS")
    list(GET pair 0 from)
    list(GET pair 1 to)
    if(NOT "${${from}}" STREQUAL "")
      list(APPEND configure "-D${to}=${${from}}")
    endif()
  endforeach()
  run(${configure} ${arg_OPTIONS})

  set(build "${CMAKE_COMMAND}" --build "${dir}" --target consumer --parallel 2)
  if(BUILD_TYPE)
    list(APPEND build --config "${BUILD_TYPE}")
  endif()
  run(${build})

  set(program "${dir}/consumer")
  if(NOT EXISTS "${program}")
    set(program "${dir}/${BUILD_TYPE}/consumer")  # multi-config generators
  endif()
  check_consumer_output(${name} "${program}" ENV ${arg_ENV})
endfunction()

# Runs a built consumer program and checks its exit status and the version it prints.
function(check_consumer_output name program)
  cmake_parse_arguments(arg "" "" "ENV" ${ARGN})
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env ${arg_ENV} "${program}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(STRIP "${out}${err}" shown)
  message(STATUS "${name}: ${shown}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name}: the consumer failed (${rc})")
  endif()
  string(FIND "${out}" "streamlock ${VERSION}\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${name}: the consumer did not print 'streamlock ${VERSION}'")
  endif()
endfunction()

# The installed headers must not pull in the C libraries' headers: they stay private.
function(check_installed_headers manifest)
  file(STRINGS "${manifest}" installed)
  set(headers "")
  foreach(file IN LISTS installed)
    if(file MATCHES "/include/streamlock/[^/]+\\.h$")
      list(APPEND headers "${file}")
    endif()
  endforeach()
  foreach(required streamlock.h version.h client.h)
    if(NOT ";${headers};" MATCHES "/${required};")
      message(FATAL_ERROR "include/streamlock/${required} was not installed")
    endif()
  endforeach()
  foreach(header IN LISTS headers)
    file(STRINGS "${header}" c_includes
      REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"](hiredis/|libpq-fe\\.h|postgresql/|fmt/)")
    if(c_includes)
      message(FATAL_ERROR "${header} includes a private dependency: ${c_includes}")
    endif()
  endforeach()
endfunction()

# Runs pkg-config on the streamlock.pc of an install prefix; its output in `out`.
function(pkg_config out prefix)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${prefix}/${LIBDIR}/pkgconfig"
                          "${PKG_CONFIG}" ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE text ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config ${ARGN} failed (${rc}): ${err}")
  endif()
  list(JOIN ARGN " " shown)
  message(STATUS "pkg-config ${shown}: ${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# Compiles the consumer by hand with exactly the flags `pkg-config [--static] --cflags --libs
# streamlock` prints (after the source file, as a static library needs), and runs it. The flags
# carry no include directory of hiredis or libpq: the public headers need none.
function(check_pkg_config prefix name)
  pkg_config(version "${prefix}" --modversion streamlock)
  if(NOT version STREQUAL VERSION)
    message(FATAL_ERROR "streamlock.pc says version ${version}, not ${VERSION}")
  endif()
  pkg_config(flags "${prefix}" ${ARGN} --cflags --libs streamlock)
  if(flags MATCHES "-I[^ ]*(hiredis|postgresql)|-I/usr/include")
    message(FATAL_ERROR "streamlock.pc gives include flags the public headers do not need: ${flags}")
  endif()
  separate_arguments(flags UNIX_COMMAND "${flags}")
  separate_arguments(extra UNIX_COMMAND "${CXX_FLAGS} ${LINKER_FLAGS}")
  set(program "${WORK_DIR}/${name}")
  # -std=c++17 is the consumer's choice (g++ 12 defaults to it anyway), not streamlock.pc's.
  run("${CXX_COMPILER}" -std=c++17 ${extra} "${CONSUMER_DIR}/main.cpp" -o "${program}" ${flags})
  check_consumer_output(${name} "${program}" ENV "LD_LIBRARY_PATH=${prefix}/${LIBDIR}")
endfunction()

# The installed package config is plain CMake: no unconfigured @VAR@ and no leftover if(ON).
function(check_installed_config prefix)
  set(config "${prefix}/${LIBDIR}/cmake/streamlock/streamlockConfig.cmake")
  file(READ "${config}" text)
  string(REGEX REPLACE "#[^\n]*" "" code "${text}")  # comments may name @PACKAGE_INIT@
  if(code MATCHES "if\\((ON|OFF|TRUE|FALSE|YES|NO|1|0)\\)" OR code MATCHES "@[A-Za-z_]+@")
    message(FATAL_ERROR "${config} has a configure-time leftover:\n${text}")
  endif()
endfunction()

# The examples' programs are installed in <prefix>/bin and answer --version with this version.
function(check_installed_programs prefix)
  foreach(program mothership_server stream_worker)
    set(path "${prefix}/bin/${program}")
    if(NOT EXISTS "${path}")
      message(FATAL_ERROR "cmake --install did not install ${program} in ${prefix}/bin")
    endif()
    execute_process(COMMAND "${path}" --version RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0 OR NOT out STREQUAL "${program} ${VERSION}\n")
      message(FATAL_ERROR "${path} --version: exit ${rc}, '${out}${err}', not '${program} ${VERSION}'")
    endif()
    message(STATUS "${path} --version: ${out}")
  endforeach()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

if(MODE STREQUAL "find_package")
  set(prefix "${WORK_DIR}/prefix")
  set(install "${CMAKE_COMMAND}" --install "${BINARY_DIR}" --prefix "${prefix}")
  if(BUILD_TYPE)
    list(APPEND install --config "${BUILD_TYPE}")
  endif()
  run(${install})
  check_installed_headers("${BINARY_DIR}/install_manifest.txt")
  check_installed_config("${prefix}")
  if(EXAMPLES)
    check_installed_programs("${prefix}")
  endif()

  build_and_run_consumer(install-tree OPTIONS
    -DCONSUMER_MODE=find_package
    "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DEXPECTED_PACKAGE_DIR=${prefix}"
    "-DEXPECTED_VERSION=${VERSION}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  build_and_run_consumer(install-tree-siblings OPTIONS
    -DCONSUMER_MODE=find_package_siblings
    "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DEXPECTED_VERSION=${VERSION}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)

  build_and_run_consumer(build-tree OPTIONS
    -DCONSUMER_MODE=find_package
    "-Dstreamlock_DIR=${BINARY_DIR}/streamlock-package"
    "-DEXPECTED_PACKAGE_DIR=${BINARY_DIR}"
    "-DEXPECTED_VERSION=${VERSION}")

  if(PKG_CONFIG AND CXX_COMPILER AND NOT IS_ABSOLUTE "${LIBDIR}")
    check_pkg_config("${prefix}" pkg-config-consumer)
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  set(options -DCONSUMER_MODE=add_subdirectory "-DSTREAMLOCK_SOURCE_DIR=${SOURCE_DIR}")
  if(LIBRARY_TYPE STREQUAL "SHARED_LIBRARY")
    list(APPEND options -DBUILD_SHARED_LIBS=ON)
  endif()
  build_and_run_consumer(add-subdirectory OPTIONS ${options})
elseif(MODE STREQUAL "library_alone")
  # README, "Building and installing the library alone": configure without the tests and examples
  # (and their dependencies), build, install.
  if(LIBRARY_TYPE STREQUAL "SHARED_LIBRARY")
    set(shared OFF)
  else()
    set(shared ON)
  endif()
  set(build "${WORK_DIR}/build")
  set(prefix "${WORK_DIR}/prefix")
  set(configure "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${build}"
      -DSTREAMLOCK_BUILD_TESTS=OFF -DSTREAMLOCK_BUILD_EXAMPLES=OFF "-DBUILD_SHARED_LIBS=${shared}")
  if(GENERATOR)
    list(APPEND configure -G "${GENERATOR}")
  endif()
  foreach(pair IN ITEMS "MAKE_PROGRAM;CMAKE_MAKE_PROGRAM" "CXX_COMPILER;CMAKE_CXX_COMPILER"
                        "BUILD_TYPE;CMAKE_BUILD_TYPE" "CXX_FLAGS;CMAKE_CXX_FLAGS"
                        "LINKER_FLAGS;CMAKE_EXE_LINKER_FLAGS" "LINKER_FLAGS;CMAKE_SHARED_LINKER_FLAGS"
                        "LIBDIR;CMAKE_INSTALL_LIBDIR")
    list(GET pair 0 from)
    list(GET pair 1 to)
    if(NOT "${${from}}" STREQUAL "")
      list(APPEND configure "-D${to}=${${from}}")
    endif()
  endforeach()
  run(${configure})
  set(build_command "${CMAKE_COMMAND}" --build "${build}" --parallel 2)
  set(install "${CMAKE_COMMAND}" --install "${build}" --prefix "${prefix}")
  if(BUILD_TYPE)
    list(APPEND build_command --config "${BUILD_TYPE}")
    list(APPEND install --config "${BUILD_TYPE}")
  endif()
  run(${build_command})
  run(${install})
  check_installed_headers("${build}/install_manifest.txt")
  check_installed_config("${prefix}")
  if(EXISTS "${prefix}/bin/mothership_server")
    message(FATAL_ERROR "the library alone installed the examples' programs")
  endif()

  build_and_run_consumer(install-tree OPTIONS
    -DCONSUMER_MODE=find_package
    "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DEXPECTED_PACKAGE_DIR=${prefix}"
    "-DEXPECTED_VERSION=${VERSION}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  build_and_run_consumer(install-tree-siblings OPTIONS
    -DCONSUMER_MODE=find_package_siblings
    "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DEXPECTED_VERSION=${VERSION}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  if(PKG_CONFIG AND CXX_COMPILER AND NOT IS_ABSOLUTE "${LIBDIR}")
    check_pkg_config("${prefix}" pkg-config-consumer)
    # --static adds Libs.private and Requires.private: there are none, so it links the same way.
    check_pkg_config("${prefix}" pkg-config-static-consumer --static)
  endif()
else()
  message(FATAL_ERROR "MODE must be find_package, add_subdirectory or library_alone, not '${MODE}'")
endif()

message(STATUS "${MODE}: OK")
