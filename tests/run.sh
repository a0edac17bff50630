#!/usr/bin/env bash
# The one test command (README and CI run it): installs what is missing from Debian, configures and
# builds streamlock with warnings as errors, starts a throwaway Redis and PostgreSQL on free
# loopback ports, runs ctest against them, and stops and removes both servers whatever happens.
#
# Usage: tests/run.sh [--sanitize address|thread | --fuzz [SECONDS]] [--build-dir DIR] [--] [CTEST ARGS...]
#   --sanitize address        ASan + UBSan + LeakSanitizer (STREAMLOCK_SANITIZE="address;undefined"),
#                             Debug build in <repo>/build-asan unless --build-dir is given
#   --sanitize thread         ThreadSanitizer (STREAMLOCK_SANITIZE=thread, suppressions in
#                             tests/tsan.supp), Debug build in <repo>/build-tsan
#   --fuzz [SECONDS]          the libFuzzer targets of tests/fuzz (clang, ASan + UBSan), each run
#                             SECONDS (default 10) from its seed corpus; ctest label "fuzz", build in
#                             <repo>/build-fuzz; no servers are started
#   --build-dir DIR, -B DIR   build directory (default: $STREAMLOCK_BUILD_DIR, else <repo>/build;
#                             with --sanitize or --fuzz: the directory named above)
#   -h, --help                this text
#   CTEST ARGS                passed to ctest after `--output-on-failure -j2`,
#                             e.g. `tests/run.sh -R lookup` or `tests/run.sh -L package`
# Under --sanitize and --fuzz any sanitizer report fails the test that printed it: ASAN_OPTIONS,
# UBSAN_OPTIONS and TSAN_OPTIONS are set to halt on the first report and abort (or exit 66).
# Options already in the environment are appended, so they win (e.g. ASAN_OPTIONS=detect_leaks=0).
# Environment:
#   STREAMLOCK_BUILD_DIR      build directory of the plain mode
#   STREAMLOCK_BUILD_TYPE     CMAKE_BUILD_TYPE (default: none, CMake's default; Debug under
#                             --sanitize, RelWithDebInfo under --fuzz)
#   STREAMLOCK_CMAKE_ARGS     extra configure arguments, split on spaces,
#                             e.g. "-DSTREAMLOCK_BUILD_EXAMPLES=OFF"
#   STREAMLOCK_TEST_TIMEOUT   ctest timeout of tests that set none (seconds, default 600)
#
# The tests get: STREAMLOCK_TEST_REDIS_URL, STREAMLOCK_TEST_REDIS_SERVER, STREAMLOCK_TEST_DATABASE_URL
# (superuser "postgres", trust auth), STREAMLOCK_TEST_PG_PORT, STREAMLOCK_TEST_PG_STOP and
# STREAMLOCK_TEST_PG_START (shell commands that stop/start the cluster and wait). And the shared
# topologies (tests must not break them; destructive tests start private ones, see tests/support):
#   STREAMLOCK_TEST_CLUSTER_URL        redis-cluster://127.0.0.1:P1,...,127.0.0.1:P6 (3 masters, 3 replicas)
#   STREAMLOCK_TEST_CLUSTER_NODES      127.0.0.1:P1,...,127.0.0.1:P6
#   STREAMLOCK_TEST_SENTINEL_URL       redis-sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3?master=NAME
#   STREAMLOCK_TEST_SENTINEL_NAME      NAME;  STREAMLOCK_TEST_SENTINEL_PORTS  S1,S2,S3
#   STREAMLOCK_TEST_SENTINEL_MASTER_PORT, STREAMLOCK_TEST_SENTINEL_REPLICA_PORTS (comma-separated)
#   STREAMLOCK_TEST_PG_PRIMARY_URL     the database of STREAMLOCK_TEST_DATABASE_URL, as the primary
#   STREAMLOCK_TEST_PG_STANDBY_URL     the same database on its streaming standby (read-only)
#   STREAMLOCK_TEST_PG_STANDBY_PORT
# and, for private setups: STREAMLOCK_TEST_REDIS_SENTINEL and STREAMLOCK_TEST_REDIS_CLI (binaries),
# STREAMLOCK_TEST_PG_BINDIR (initdb, pg_ctl, pg_basebackup, postgres) and STREAMLOCK_TEST_SCRATCH
# (a directory for their files, removed with the rest on exit).
set -euo pipefail

# Debian packages the build and the tests need; add new ones here.
PACKAGES=(
  build-essential cmake pkg-config procps
  libhiredis-dev libpq-dev libssl-dev openssl libfmt-dev catch2 libcpp-httplib-dev nlohmann-json3-dev
  redis-server redis-sentinel redis-tools postgresql postgresql-contrib chromium doxygen
)
# What --fuzz needs on top: clang and its runtimes (libFuzzer, ASan, UBSan).
FUZZ_PACKAGES=(clang libclang-rt-dev)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/services.sh
source "$ROOT/tests/services.sh"  # install_debian_packages, start_redis, start_postgres...
BUILD_DIR=""      # from --build-dir, else chosen by the mode
MODE=plain        # plain | address | thread | fuzz
FUZZ_SECONDS=10
RUN_DIR=""        # temp dir holding both servers' data, removed on exit
REDIS_PID=""      # set by start_redis and start_postgres (tests/services.sh), for cleanup
PG_DATA=""
CTEST_PID=""
START_TIME=$(date +%s)

use_script_messages tests/run.sh "${BASH_SOURCE[0]}"  # log, die, usage (tests/services.sh)

parse_args() {
  CTEST_ARGS=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h|--help) usage; exit 0 ;;
      -B|--build-dir) [[ $# -ge 2 ]] || die "$1 needs a directory"; BUILD_DIR=$2; shift 2 ;;
      --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
      --sanitize) [[ $# -ge 2 ]] || die "$1 needs address or thread"; set_mode "$2"; shift 2 ;;
      --sanitize=*) set_mode "${1#*=}"; shift ;;
      --fuzz)
        set_mode fuzz; shift
        if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then FUZZ_SECONDS=$1; shift; fi ;;
      --fuzz=*) set_mode fuzz; FUZZ_SECONDS=${1#*=}; shift ;;
      --) shift; CTEST_ARGS+=("$@"); break ;;
      *) CTEST_ARGS+=("$1"); shift ;;
    esac
  done
  [[ $FUZZ_SECONDS =~ ^[0-9]+$ && $FUZZ_SECONDS -gt 0 ]] || die "--fuzz needs a whole number of seconds"
  if [[ -z $BUILD_DIR ]]; then
    case $MODE in
      plain) BUILD_DIR=${STREAMLOCK_BUILD_DIR:-$ROOT/build} ;;
      address) BUILD_DIR=$ROOT/build-asan ;;
      thread) BUILD_DIR=$ROOT/build-tsan ;;
      fuzz) BUILD_DIR=$ROOT/build-fuzz ;;
    esac
  fi
  [[ $BUILD_DIR = /* ]] || BUILD_DIR=$PWD/$BUILD_DIR
}

set_mode() {
  [[ $MODE = plain || $MODE = "$1" ]] || die "--sanitize and --fuzz do not combine; run them one after the other"
  case $1 in
    address|thread|fuzz) MODE=$1 ;;
    *) die "--sanitize takes address (ASan + UBSan) or thread (TSan), not '$1'" ;;
  esac
}

# Any sanitizer report ends the process with a failure status, so that ctest counts it. The
# options are harmless for uninstrumented programs (psql, redis-server); user options come last.
export_sanitizer_options() {
  # abort_on_error: a report ends in SIGABRT even where a program catches exit codes.
  # detect_leaks: LeakSanitizer at exit (and after each fuzz input that leaks).
  local asan=halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1
  asan+=:check_initialization_order=1:strict_init_order=1
  # Catches a thread or callback using a dead stack frame; costs the fuzzers 2-3x their speed.
  [[ $MODE = fuzz ]] || asan+=:detect_stack_use_after_return=1
  local ubsan=halt_on_error=1:abort_on_error=1:print_stacktrace=1:report_error_type=1
  # exitcode=66 (TSan's default, made explicit) with halt_on_error: the first race fails the test.
  local tsan=halt_on_error=1:exitcode=66:second_deadlock_stack=1:history_size=4
  tsan+=:suppressions=$ROOT/tests/tsan.supp
  export ASAN_OPTIONS=$asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}
  export UBSAN_OPTIONS=$ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
  export TSAN_OPTIONS=$tsan${TSAN_OPTIONS:+:$TSAN_OPTIONS}
}

install_packages() {
  local wanted=("${PACKAGES[@]}")
  [[ $MODE != fuzz ]] || wanted+=("${FUZZ_PACKAGES[@]}")
  install_debian_packages "${wanted[@]}"
}

configure_and_build() {
  local args=(-S "$ROOT" -B "$BUILD_DIR" -DSTREAMLOCK_WARNINGS_AS_ERRORS=ON -DBUILD_SHARED_LIBS=ON)
  local build_type=${STREAMLOCK_BUILD_TYPE:-}
  # A build dir keeps its generator and compiler; only a fresh one chooses.
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    if command -v ninja >/dev/null; then args+=(-G Ninja); else args+=(-G "Unix Makefiles"); fi
    [[ $MODE != fuzz ]] || args+=(-DCMAKE_CXX_COMPILER=clang++)
  fi
  case $MODE in
    address) args+=("-DSTREAMLOCK_SANITIZE=address;undefined"); build_type=${build_type:-Debug} ;;
    thread) args+=(-DSTREAMLOCK_SANITIZE=thread); build_type=${build_type:-Debug} ;;
    fuzz)
      # The library (static, so the fuzzers link only what they use) and the fuzzers, nothing else.
      args+=("-DSTREAMLOCK_SANITIZE=address;undefined" -DSTREAMLOCK_BUILD_FUZZERS=ON
             "-DSTREAMLOCK_FUZZ_SECONDS=$FUZZ_SECONDS" -DBUILD_SHARED_LIBS=OFF
             -DSTREAMLOCK_BUILD_TESTS=OFF -DSTREAMLOCK_BUILD_EXAMPLES=OFF -DSTREAMLOCK_INSTALL=OFF)
      build_type=${build_type:-RelWithDebInfo} ;;
  esac
  [[ -z $build_type ]] || args+=("-DCMAKE_BUILD_TYPE=$build_type")
  local extra=()
  read -r -a extra <<<"${STREAMLOCK_CMAKE_ARGS:-}"
  if [[ $MODE = fuzz ]]; then
    export CC=clang CXX=clang++
    if [[ -f $BUILD_DIR/CMakeCache.txt ]] &&
       ! grep -q '^CMAKE_CXX_COMPILER:.*clang' "$BUILD_DIR/CMakeCache.txt"; then
      die "$BUILD_DIR was configured with another compiler than clang: remove it, or pick another --build-dir"
    fi
  fi
  cmake "${args[@]}" "${extra[@]}"
  cmake --build "$BUILD_DIR" --parallel "$(nproc)"
}

# Starts Redis, the Redis Cluster, the Sentinel setup, PostgreSQL (with the streamlock_test
# database) and its standby in RUN_DIR, for the tests. The cluster and the sentinels settle in the
# background while PostgreSQL starts.
start_services() {
  local start=$SECONDS cluster_wait sentinel_wait
  spawn_redis_cluster "$RUN_DIR/cluster"
  form_redis_cluster >"$RUN_DIR/cluster/form.log" 2>&1 &
  cluster_wait=$!
  SERVICES_HELPER_PIDS+=("$cluster_wait")
  spawn_redis_sentinel "$RUN_DIR/sentinel" streamlock-test
  await_redis_sentinel >"$RUN_DIR/sentinel/await.log" 2>&1 &
  sentinel_wait=$!
  SERVICES_HELPER_PIDS+=("$sentinel_wait")

  start_redis "$RUN_DIR/redis" --enable-debug-command local
  export STREAMLOCK_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  export STREAMLOCK_TEST_REDIS_SERVER STREAMLOCK_TEST_REDIS_SENTINEL STREAMLOCK_TEST_REDIS_CLI
  STREAMLOCK_TEST_REDIS_SERVER=$(command -v redis-server)
  STREAMLOCK_TEST_REDIS_SENTINEL=$(command -v redis-sentinel)
  STREAMLOCK_TEST_REDIS_CLI=$(command -v redis-cli)

  start_postgres "$RUN_DIR/postgres"
  local url="postgresql://postgres@127.0.0.1:$PG_PORT" psql
  psql=$(pg_bindir)/psql
  "$psql" -X -q -v ON_ERROR_STOP=1 "$url/postgres" -c 'CREATE DATABASE streamlock_test'
  "$psql" -X -q -v ON_ERROR_STOP=1 "$url/streamlock_test" \
    -c 'CREATE EXTENSION pg_stat_statements' -c 'CREATE EXTENSION pgcrypto'
  export STREAMLOCK_TEST_DATABASE_URL="$url/streamlock_test"
  export STREAMLOCK_TEST_PG_PORT=$PG_PORT
  export STREAMLOCK_TEST_PG_STOP="$(printf '%q ' "${PG_CTL[@]}") -m fast stop"
  export STREAMLOCK_TEST_PG_START="$(printf '%q ' "${PG_CTL[@]}") -l $(printf '%q' "$PG_LOG") start"
  export STREAMLOCK_TEST_PG_BINDIR
  STREAMLOCK_TEST_PG_BINDIR=$(pg_bindir)

  start_postgres_standby "$RUN_DIR/standby"
  export STREAMLOCK_TEST_PG_PRIMARY_URL=$STREAMLOCK_TEST_DATABASE_URL
  export STREAMLOCK_TEST_PG_STANDBY_URL="postgresql://postgres@127.0.0.1:$PG_STANDBY_PORT/streamlock_test"
  export STREAMLOCK_TEST_PG_STANDBY_PORT=$PG_STANDBY_PORT

  wait "$cluster_wait" || { cat "$RUN_DIR/cluster/form.log" >&2; die "the Redis Cluster did not form"; }
  log "Redis Cluster (3 masters, 3 replicas) on $CLUSTER_NODES"
  export STREAMLOCK_TEST_CLUSTER_URL=$CLUSTER_URL
  export STREAMLOCK_TEST_CLUSTER_NODES=$CLUSTER_NODES
  wait "$sentinel_wait" || { cat "$RUN_DIR/sentinel/await.log" >&2; die "the Sentinel setup did not come up"; }
  log "Sentinel setup: master 127.0.0.1:$SENTINEL_MASTER_PORT, replicas ${SENTINEL_REPLICA_PORTS[*]}," \
    "sentinels ${SENTINEL_PORTS[*]}"
  SERVICES_HELPER_PIDS=()
  export STREAMLOCK_TEST_SENTINEL_URL=$SENTINEL_URL
  export STREAMLOCK_TEST_SENTINEL_NAME=$SENTINEL_NAME
  export STREAMLOCK_TEST_SENTINEL_PORTS STREAMLOCK_TEST_SENTINEL_REPLICA_PORTS
  STREAMLOCK_TEST_SENTINEL_PORTS=$(IFS=,; echo "${SENTINEL_PORTS[*]}")
  STREAMLOCK_TEST_SENTINEL_REPLICA_PORTS=$(IFS=,; echo "${SENTINEL_REPLICA_PORTS[*]}")
  export STREAMLOCK_TEST_SENTINEL_MASTER_PORT=$SENTINEL_MASTER_PORT

  export STREAMLOCK_TEST_SCRATCH=$RUN_DIR/scratch
  mkdir -p "$STREAMLOCK_TEST_SCRATCH"
  chmod 755 "$STREAMLOCK_TEST_SCRATCH"  # the postgres user must reach private data dirs inside
  log "services up in $((SECONDS - start)) s"
}

# Kills a process and its descendants (ctest and the tests it runs), children first.
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

run_ctest() {
  local args=(--test-dir "$BUILD_DIR" --output-on-failure -j2 --no-tests=error
              --timeout "${STREAMLOCK_TEST_TIMEOUT:-600}")
  # In the background, so that INT/TERM reach the trap at once instead of after ctest.
  ctest "${args[@]}" "${CTEST_ARGS[@]}" &
  CTEST_PID=$!
  local rc=0
  wait "$CTEST_PID" || rc=$?
  CTEST_PID=""
  return "$rc"
}

# Ends a ctest still running when the script is interrupted.
stop_ctest() {
  [[ -z $CTEST_PID ]] || kill_tree "$CTEST_PID"
}

main() {
  parse_args "$@"
  stop_services_on_exit stop_ctest
  install_packages
  export_sanitizer_options
  configure_and_build

  if [[ $MODE = fuzz ]]; then
    log "fuzzing each target for $FUZZ_SECONDS s (build dir $BUILD_DIR)"
    CTEST_ARGS=(-L fuzz "${CTEST_ARGS[@]}")
    run_ctest
    return
  fi

  RUN_DIR=$(mktemp -d /tmp/streamlock-run.XXXXXX)
  chmod 755 "$RUN_DIR"  # the postgres user must reach its data dir inside
  start_services
  run_ctest
}

main "$@"
