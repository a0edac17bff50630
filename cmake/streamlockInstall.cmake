# Install and export rules: the library, its public headers (with the generated version.h), a CMake
# package (streamlockConfig.cmake + version file + targets) and a pkg-config file. (The examples'
# programs install from examples/CMakeLists.txt.)
# Included by the top-level CMakeLists.txt when STREAMLOCK_INSTALL is on.
include_guard(GLOBAL)

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(STREAMLOCK_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/streamlock"
    CACHE STRING "Where streamlockConfig.cmake is installed, relative to the prefix")
set(STREAMLOCK_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    CACHE STRING "Where streamlock.pc is installed, relative to the prefix")

# --- The library and its headers -----------------------------------------------------------------

install(TARGETS streamlock
  EXPORT streamlockTargets
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT streamlock_Runtime
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT streamlock_Runtime
          NAMELINK_COMPONENT streamlock_Development
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT streamlock_Development)

# FILES_MATCHING keeps version.h.in out; the configured version.h lives in the build tree.
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/streamlock"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
  COMPONENT streamlock_Development
  FILES_MATCHING PATTERN "*.h")
install(FILES "${PROJECT_BINARY_DIR}/include/streamlock/version.h"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/streamlock"
  COMPONENT streamlock_Development)

# --- CMake package -------------------------------------------------------------------------------

# The C libraries are PRIVATE dependencies: a consumer of the shared library never sees them,
# a consumer of the static one links them. The package config looks for them only in that case.
get_target_property(STREAMLOCK_LIBRARY_TYPE streamlock TYPE)  # STATIC_LIBRARY or SHARED_LIBRARY
if(STREAMLOCK_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  set(STREAMLOCK_PACKAGE_STATIC ON)
else()
  set(STREAMLOCK_PACKAGE_STATIC OFF)
endif()

set(_streamlock_package_dir "${PROJECT_BINARY_DIR}/streamlock-package")
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/streamlockConfig.cmake.in"
  "${_streamlock_package_dir}/streamlockConfig.cmake"
  INSTALL_DESTINATION "${STREAMLOCK_INSTALL_CMAKEDIR}")
# While the major version is 0, a minor version may break the API.
write_basic_package_version_file(
  "${_streamlock_package_dir}/streamlockConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMinorVersion)

install(EXPORT streamlockTargets
  NAMESPACE streamlock::
  DESTINATION "${STREAMLOCK_INSTALL_CMAKEDIR}"
  COMPONENT streamlock_Development)
install(FILES
    "${_streamlock_package_dir}/streamlockConfig.cmake"
    "${_streamlock_package_dir}/streamlockConfigVersion.cmake"
    "${PROJECT_SOURCE_DIR}/cmake/streamlockDependencies.cmake"
  DESTINATION "${STREAMLOCK_INSTALL_CMAKEDIR}"
  COMPONENT streamlock_Development)

# The same package for the build tree: find_package(streamlock) with streamlock_DIR set to
# <build>/streamlock-package uses the freshly built library without installing it.
export(EXPORT streamlockTargets
  NAMESPACE streamlock::
  FILE "${_streamlock_package_dir}/streamlockTargets.cmake")
configure_file("${PROJECT_SOURCE_DIR}/cmake/streamlockDependencies.cmake"
  "${_streamlock_package_dir}/streamlockDependencies.cmake" COPYONLY)

# --- pkg-config ----------------------------------------------------------------------------------

# The prefix is derived from the .pc file's own location, so the file stays right after
# `cmake --install --prefix` or DESTDIR moves the tree.
function(_streamlock_pc_path out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

if(IS_ABSOLUTE "${STREAMLOCK_INSTALL_PKGCONFIGDIR}")
  set(STREAMLOCK_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _streamlock_up "/prefix/${STREAMLOCK_INSTALL_PKGCONFIGDIR}" "/prefix")
  string(REGEX REPLACE "/$" "" _streamlock_up "${_streamlock_up}")
  set(STREAMLOCK_PC_PREFIX "\${pcfiledir}/${_streamlock_up}")
  unset(_streamlock_up)
endif()
_streamlock_pc_path(STREAMLOCK_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
_streamlock_pc_path(STREAMLOCK_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")

# `pkg-config --cflags --libs streamlock` links as printed. The public headers need neither hiredis
# nor libpq nor fmt, so no Cflags of theirs. A shared streamlock links them itself; a static one
# needs them on the consumer's link line, in Libs: Libs.private and Requires.private are read only
# with --static, and with --static Debian's libpq.pc asks for libpgcommon and libpgport, which it
# does not ship. They are -l flags rather than Requires, which would add their include
# directories (-I/usr/include/hiredis -I/usr/include/postgresql) to Cflags. The libraries sit in the
# linker's default directories on Debian.
if(STREAMLOCK_PACKAGE_STATIC)
  set(STREAMLOCK_PC_LIBS " -lhiredis -lpq -lssl -lcrypto -lfmt -pthread")
else()
  set(STREAMLOCK_PC_LIBS " -pthread")
endif()

configure_file("${PROJECT_SOURCE_DIR}/cmake/streamlock.pc.in"
  "${_streamlock_package_dir}/streamlock.pc" @ONLY)
install(FILES "${_streamlock_package_dir}/streamlock.pc"
  DESTINATION "${STREAMLOCK_INSTALL_PKGCONFIGDIR}"
  COMPONENT streamlock_Development)

unset(_streamlock_package_dir)
