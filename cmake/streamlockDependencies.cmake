# Finds streamlock's C and C++ dependencies as imported targets. Shared by the build and by the
# installed package config, so that a consumer of a static streamlock finds the same libraries.
# Guarded per directory, not globally: the imported targets defined here are visible only in the
# directory that made them, so a consumer that calls find_package(streamlock) in two sibling
# directories needs them made in each (the if(NOT TARGET) checks skip what is already visible).
include_guard(DIRECTORY)

find_package(PkgConfig REQUIRED QUIET)

# Debian's hiredis 0.14 ships a CMake config without an imported target (and it fails when asked
# without a version), so hiredis comes from its pkg-config file.
if(NOT TARGET hiredis::hiredis)
  pkg_check_modules(STREAMLOCK_HIREDIS REQUIRED QUIET IMPORTED_TARGET hiredis)
  add_library(hiredis::hiredis INTERFACE IMPORTED)
  target_link_libraries(hiredis::hiredis INTERFACE PkgConfig::STREAMLOCK_HIREDIS)
endif()

if(NOT TARGET PostgreSQL::PostgreSQL)
  find_package(PostgreSQL REQUIRED)
endif()

if(NOT TARGET fmt::fmt)
  find_package(fmt REQUIRED)
endif()

# TLS to Redis (rediss://): Debian's libssl-dev.
if(NOT TARGET OpenSSL::SSL)
  find_package(OpenSSL 1.1.1 REQUIRED)
endif()

find_package(Threads REQUIRED)
