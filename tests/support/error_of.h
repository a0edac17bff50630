#pragma once

#include <catch2/catch.hpp>

#include <optional>

#include "streamlock/error.h"

namespace streamlock::test {

// The Error that fn throws; fails the test when it throws nothing.
template <typename Fn>
std::optional<Error> errorOf(Fn&& fn) {
  try {
    fn();
  } catch (const Error& error) {
    return error;
  }
  FAIL("no streamlock::Error thrown");
  return std::nullopt;
}

}  // namespace streamlock::test
