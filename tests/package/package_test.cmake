# Packaging smoke test, run by ctest in script mode (see CMakeLists.txt next to this file):
#
#   cmake -DMODE=find_package|add_subdirectory -DSOURCE_DIR=<streamlock source> -DBINARY_DIR=<its build>
#         -DCONSUMER_DIR=<consumer project> -DWORK_DIR=<scratch dir> -DVERSION=<x.y.z>
#         [-DGENERATOR=... -DMAKE_PROGRAM=... -DCXX_COMPILER=... -DBUILD_TYPE=... -DCXX_FLAGS=...
#          -DLINKER_FLAGS=... -DLIBRARY_TYPE=SHARED_LIBRARY|STATIC_LIBRARY -DLIBDIR=...
#          -DPKG_CONFIG=<pkg-config executable>]
#         -P package_test.cmake
#
# find_package:     installs the build into WORK_DIR/prefix, then builds and runs the consumer
#                   against that prefix, against the build tree's export, and through pkg-config.
# add_subdirectory: builds and runs the consumer with streamlock's source tree as a subdirectory.
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

# Compiles the consumer by hand with the flags streamlock.pc gives, and runs it.
function(check_pkg_config prefix)
  set(pc_path "${prefix}/${LIBDIR}/pkgconfig")
  set(pc_args --cflags --libs streamlock)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${pc_path}" "${PKG_CONFIG}" ${pc_args}
    RESULT_VARIABLE rc OUTPUT_VARIABLE flags ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config ${pc_args} failed (${rc}): ${err}")
  endif()
  list(JOIN pc_args " " shown)
  message(STATUS "pkg-config ${shown}: ${flags}")
  separate_arguments(flags UNIX_COMMAND "${flags}")
  separate_arguments(extra UNIX_COMMAND "${CXX_FLAGS} ${LINKER_FLAGS}")
  set(program "${WORK_DIR}/pkg-config-consumer")
  run("${CXX_COMPILER}" -std=c++17 ${extra} "${CONSUMER_DIR}/main.cpp" -o "${program}" ${flags})
  check_consumer_output(pkg-config "${program}" ENV "LD_LIBRARY_PATH=${prefix}/${LIBDIR}")
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

  build_and_run_consumer(install-tree OPTIONS
    -DCONSUMER_MODE=find_package
    "-DCMAKE_PREFIX_PATH=${prefix}"
    "-DEXPECTED_PACKAGE_DIR=${prefix}"
    "-DEXPECTED_VERSION=${VERSION}"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)

  build_and_run_consumer(build-tree OPTIONS
    -DCONSUMER_MODE=find_package
    "-Dstreamlock_DIR=${BINARY_DIR}/streamlock-package"
    "-DEXPECTED_PACKAGE_DIR=${BINARY_DIR}"
    "-DEXPECTED_VERSION=${VERSION}")

  # A static streamlock would need `pkg-config --static`, and Debian's libpq.pc then names
  # libpgcommon/libpgport, which libpq-dev does not ship: check the shared library only.
  if(PKG_CONFIG AND CXX_COMPILER AND LIBRARY_TYPE STREQUAL "SHARED_LIBRARY"
     AND NOT IS_ABSOLUTE "${LIBDIR}")
    check_pkg_config("${prefix}")
  endif()
elseif(MODE STREQUAL "add_subdirectory")
  set(options -DCONSUMER_MODE=add_subdirectory "-DSTREAMLOCK_SOURCE_DIR=${SOURCE_DIR}")
  if(LIBRARY_TYPE STREQUAL "SHARED_LIBRARY")
    list(APPEND options -DBUILD_SHARED_LIBS=ON)
  endif()
  build_and_run_consumer(add-subdirectory OPTIONS ${options})
else()
  message(FATAL_ERROR "MODE must be find_package or add_subdirectory, not '${MODE}'")
endif()

message(STATUS "${MODE}: OK")
