#!/usr/bin/env bash
# The one benchmark command: installs what is missing from Debian, builds streamlock and its
# benchmarks in Release into build-bench/, starts a throwaway Redis and PostgreSQL on free loopback
# ports, prints the machine, runs each benchmark (printing its exact command line and its
# library-versus-raw table), and stops and removes both servers whatever happens.
#
# Usage: bench/run.sh [--build-dir DIR] [--profile] [--] [BENCHMARK ARGS...]
#   --build-dir DIR, -B DIR   build directory (default: <repo>/build-bench)
#   --profile                 afterwards, run the 1,000-chat reconciliation and its raw floor under
#                             valgrind --tool=callgrind and print where the instructions go
#   -h, --help                this text
#   BENCHMARK ARGS            passed to every benchmark, e.g. --benchmark_filter=lookup/.*/1000
# Environment:
#   STREAMLOCK_BENCH_MIN_TIME     --benchmark_min_time per repetition, seconds (default 0.3)
#   STREAMLOCK_BENCH_REPETITIONS  --benchmark_repetitions (default 5; the tables use the median)
#
# The benchmarks get STREAMLOCK_BENCH_REDIS_URL, STREAMLOCK_BENCH_CLUSTER_URL (a local 6-node Redis
# Cluster) and STREAMLOCK_BENCH_DATABASE_URL (superuser "postgres", trust auth). The whole run takes
# about three minutes on two cores.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config procps
  libhiredis-dev libpq-dev libssl-dev libfmt-dev libbenchmark-dev
  redis-server redis-tools postgresql
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/services.sh
source "$ROOT/tests/services.sh"  # install_debian_packages, start_redis, start_postgres...
BUILD_DIR=$ROOT/build-bench
PROFILE=0
BENCH_ARGS=()
RUN_DIR=""        # temp dir holding both servers' data, removed on exit
REDIS_PID=""      # set by start_redis and start_postgres (tests/services.sh), for cleanup
PG_DATA=""
START_TIME=$(date +%s)

use_script_messages bench/run.sh "${BASH_SOURCE[0]}"  # log, die, usage (tests/services.sh)

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h|--help) usage; exit 0 ;;
      -B|--build-dir) [[ $# -ge 2 ]] || die "$1 needs a directory"; BUILD_DIR=$2; shift 2 ;;
      --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
      --profile) PROFILE=1; shift ;;
      --) shift; BENCH_ARGS+=("$@"); break ;;
      *) BENCH_ARGS+=("$1"); shift ;;
    esac
  done
  [[ $BUILD_DIR = /* ]] || BUILD_DIR=$PWD/$BUILD_DIR
}

# Prints a command, then runs it.
run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  "$@"
}

install_packages() {
  local wanted=("${PACKAGES[@]}")
  [[ $PROFILE -eq 0 ]] || wanted+=(valgrind)
  install_debian_packages "${wanted[@]}"
}

configure_and_build() {
  local args=(-S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSTREAMLOCK_BUILD_BENCHMARKS=ON
              -DSTREAMLOCK_BUILD_TESTS=OFF -DSTREAMLOCK_BUILD_EXAMPLES=OFF -DSTREAMLOCK_WARNINGS_AS_ERRORS=ON)
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    if command -v ninja >/dev/null; then args+=(-G Ninja); else args+=(-G "Unix Makefiles"); fi
  fi
  run cmake "${args[@]}"
  run cmake --build "$BUILD_DIR" --parallel "$(nproc)"
}

# Starts Redis and PostgreSQL in RUN_DIR, with the streamlock_bench database, for the benchmarks.
start_services() {
  start_redis "$RUN_DIR/redis"
  export STREAMLOCK_BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  # bench_cluster: a local 6-node Redis Cluster (3 masters).
  start_redis_cluster "$RUN_DIR/cluster"
  export STREAMLOCK_BENCH_CLUSTER_URL=$CLUSTER_URL
  # Without pg_stat_statements, as always here: its hook would add to every statement measured.
  start_postgres "$RUN_DIR/postgres" "shared_preload_libraries = ''"
  local url="postgresql://postgres@127.0.0.1:$PG_PORT" psql
  psql=$(pg_bindir)/psql
  "$psql" -X -q -v ON_ERROR_STOP=1 "$url/postgres" -c 'CREATE DATABASE streamlock_bench'
  export STREAMLOCK_BENCH_DATABASE_URL="$url/streamlock_bench"
}

print_machine() {
  echo "== machine"
  echo "nproc: $(nproc)"
  echo "cpu: $(sed -n '/^model name/{s/^model name[[:space:]]*: //p;q}' /proc/cpuinfo)"
  echo "kernel: $(uname -srm)"
  echo "compiler: $(c++ --version | head -n 1)"
  echo "redis-server: $(redis-server --version | sed 's/^Redis server //')"
  echo "postgres: $("$(pg_bindir)/postgres" --version)"
  echo "packages: $(dpkg-query -W -f='${Package} ${Version}; ' libhiredis-dev libpq-dev libbenchmark-dev)"
  echo "note: Google Benchmark's '***WARNING*** Library was built as DEBUG' is about Debian's libbenchmark"
  echo "      build; streamlock and the benchmarks are built Release (-O3 -DNDEBUG)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes wall times noisy)"
  echo "redis: $STREAMLOCK_BENCH_REDIS_URL  postgres: $STREAMLOCK_BENCH_DATABASE_URL"
}

run_benchmarks() {
  local flags=(--benchmark_min_time="${STREAMLOCK_BENCH_MIN_TIME:-0.3}"
               --benchmark_repetitions="${STREAMLOCK_BENCH_REPETITIONS:-5}"
               --benchmark_enable_random_interleaving=true
               --benchmark_display_aggregates_only=true
               --benchmark_counters_tabular=true)
  local bench
  for bench in bench_lookup bench_lock bench_repair bench_cluster; do
    echo
    echo "== $bench"
    run "$BUILD_DIR/bench/$bench" "${flags[@]}" "${BENCH_ARGS[@]}"
  done
}

# Sums the calls to the functions whose name matches PATTERN in a callgrind output file.
callgrind_calls() {
  awk -v PATTERN="$1" '
    /^c?fn=\(/ {
      id = $0; sub(/^c?fn=/, "", id); name = id
      sub(/\).*/, ")", id); sub(/^\([0-9]+\) ?/, "", name)
      if (name != "") names[id] = name
      if ($0 ~ /^cfn=/) callee = names[id]
      next
    }
    /^calls=/ { if (callee ~ PATTERN) { n = $0; sub(/^calls=/, "", n); sub(/ .*/, "", n); total += n } }
    END { print total + 0 }' "$2"
}

# User-space instructions per call of each 1,000-chat lookup benchmark, and where the library's
# reconciliation spends them. Deterministic, unlike the wall-clock figures on a shared machine;
# syscalls and waiting for Redis are not in these counts.
profile() {
  local out=$RUN_DIR/callgrind fn toggle divisor total calls
  mkdir -p "$out"
  echo
  echo "== profile: valgrind --tool=callgrind, instructions (Ir) per call, 1,000 chats"
  for fn in raw_mget raw_mget_map lib_get_active lib_reconcile; do
    case $fn in
      raw_mget) toggle='*rawMget(*'; divisor='^redisGetReply$' ;;
      raw_mget_map) toggle='*rawMgetMap(*'; divisor='^redisGetReply$' ;;
      lib_get_active) toggle='*libGetActive(*'; divisor='Client::getActiveChatStreamIds' ;;
      lib_reconcile) toggle='*libReconcile(*'; divisor='Client::reconcileChatStreamMarkers' ;;
    esac
    # The library's work is split between the calling thread and its I/O thread (Loop::run): both
    # are counted (callgrind toggles collection per thread).
    local loop=()
    [[ $fn = raw_* ]] || loop=(--toggle-collect='*detail::Loop::run*')
    run valgrind --tool=callgrind --callgrind-out-file="$out/$fn.out" --toggle-collect="$toggle" "${loop[@]}" \
      "$BUILD_DIR/bench/bench_lookup" --benchmark_filter="^lookup/$fn/1000/" \
      --benchmark_min_time=0.5 --benchmark_repetitions=1 >"$out/$fn.log" 2>&1 || { cat "$out/$fn.log"; return 1; }
    total=$(callgrind_annotate "$out/$fn.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
    calls=$(callgrind_calls "$divisor" "$out/$fn.out")
    printf '%-16s %10d Ir per call (%d calls)\n' "$fn" "$((total / calls))" "$calls"
  done
  echo
  echo "-- lib_reconcile/1000: inclusive Ir per call of the library's functions and their callees"
  calls=$(callgrind_calls 'Client::reconcileChatStreamMarkers' "$out/lib_reconcile.out")
  callgrind_annotate --tree=calling --inclusive=yes "$out/lib_reconcile.out" 2>/dev/null | awk -v calls="$calls" '
    /^[ 0-9,]+\([ 0-9.]+%\)  \* / { show = ($0 ~ /libReconcile\(|streamlock::/) }
    show {
      ir = $1; gsub(",", "", ir)
      if (ir !~ /^[0-9]+$/) { print ""; next }
      sub(/^[ 0-9,]+\([ 0-9.]+%\)  /, "")
      sub(/\(std::.*\) \[/, "(...) [")  # drop long argument lists
      if (ir / calls >= 5000) printf "%9d  %s\n", ir / calls, substr($0, 1, 150)
    }'
}

main() {
  parse_args "$@"
  stop_services_on_exit
  install_packages
  configure_and_build

  RUN_DIR=$(mktemp -d /tmp/streamlock-bench.XXXXXX)
  chmod 755 "$RUN_DIR"  # the postgres user must reach its data dir inside
  start_services
  print_machine
  run_benchmarks
  [[ $PROFILE -eq 0 ]] || profile
}

main "$@"
