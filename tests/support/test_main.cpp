// The one Catch2 main of every test executable, compiled once into the support library.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
