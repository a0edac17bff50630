#!/usr/bin/env bash
# A/B comparison of server builds or flags on one machine: starts one throwaway Redis and
# PostgreSQL with bench/load.sh's workspace (50 chats, 17 live), then for each round runs every
# configuration in turn (a fresh server each, warmed up, in the steady state) under wrk on each
# endpoint, so that the machine's drift hits all configurations alike. Per run: requests/s, wrk's
# p50 and p99, and per request the server's CPU, PostgreSQL's CPU and (with --perf) the server's
# system calls and context switches, counted by `perf stat -e raw_syscalls:sys_enter,context-switches
# -p <server>` over the wrk run. With --pgbench, each round also runs each endpoint's pgbench floor
# (bench/load.sh's), for PostgreSQL's CPU per transaction.
#
# Usage: bench/load/compare.sh [--rounds N] [--duration S] [--connections N] [--endpoints LIST]
#                              [--perf] [--pgbench] --config NAME BINARY [FLAGS] [--config ...]
#   --config NAME BINARY FLAGS  a configuration: a mothership_server binary and its flags (one
#                               word, split on spaces; "" for none); words NAME=VALUE before the
#                               flags are set in the server's environment
#   --rounds N                  rounds (default 3)
#   --duration S                seconds of each wrk run (default 6)
#   --connections N             wrk connections (default 32)
#   --endpoints LIST            list, chat or list,chat (default)
#   --perf                      count system calls and context switches with perf stat
#   --pgbench                   also run the pgbench floors in each round (with the markers as
#                               the server runs left them: the floor only reads them)
#   --build-dir DIR, -B DIR     where bench/load.sh built print_sql (default <repo>/build-load)
#   -h, --help                  this text
# Only --pgbench needs a build of bench/load/print_sql (bench/load.sh makes one).
# Prints every run, then a table of all runs and the medians per configuration and endpoint.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/load.sh
source "$HERE/../load.sh"  # its functions and settings; sourced, it runs nothing
use_script_messages bench/load/compare.sh "${BASH_SOURCE[0]}"

ROUNDS=3
DURATION=6
ENDPOINTS=list,chat
PERF=0
PGBENCH=0
NAMES=() BINARIES=() FLAGSETS=()
ROWS=()

while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --config) [[ $# -ge 4 ]] || die "--config wants NAME BINARY FLAGS"
              [[ -x $3 ]] || die "$3 is not an executable"
              NAMES+=("$2") BINARIES+=("$3") FLAGSETS+=("$4"); shift 4 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --endpoints) ENDPOINTS=$2; shift 2 ;;
    --perf) PERF=1; shift ;;
    --pgbench) PGBENCH=1; shift ;;
    -B|--build-dir) BUILD_DIR=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ ${#NAMES[@]} -gt 0 ]] || die "give at least one --config"

# Starts BINARY with [NAME=VALUE...] FLAGS (as load.sh's start_server does with its own build).
start_binary() {
  local binary=$1 out=$RUN_DIR/server.out err=$RUN_DIR/server.err i environment=()
  shift
  while [[ $# -gt 0 && $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do environment+=("$1"); shift; done
  : >"$out"
  printf '+ %s\n' "$(printf '%q ' env "${environment[@]}" "$binary" --listen 127.0.0.1:0 --database-url "$DB_URL" --redis-url "$REDIS_URL" "$@")"
  env "${environment[@]}" "$binary" --listen 127.0.0.1:0 --database-url "$DB_URL" --redis-url "$REDIS_URL" "$@" </dev/null >"$out" 2>>"$err" &
  SERVER_PID=$!
  for ((i = 0; i < 200; i++)); do
    if grep -q '^listening on ' "$out"; then
      SERVER_URL=$(sed -n 's/^listening on //p' "$out" | head -n 1)
      return
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$err" >&2; die "$binary exited"; }
    sleep 0.1
  done
  die "$binary did not start"
}

# measure NAME ENDPOINT: one wrk run on the server that runs; appends a row.
measure() {
  local name=$1 endpoint=$2 url out=$RUN_DIR/wrk.out perfout=$RUN_DIR/perf.out
  url=$("${endpoint}_url")
  steady_state >/dev/null
  local before after t0 t1 perfpid=""
  before=$(cpu_snapshot)
  if [[ $PERF -eq 1 ]]; then
    perf stat -e raw_syscalls:sys_enter,context-switches -x, -o "$perfout" -p "$SERVER_PID" -- sleep "$DURATION" &
    perfpid=$!
  fi
  t0=$(date +%s%N)
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/bench/load/auth.lua" "$url" -- "$TOKEN" >"$out"
  t1=$(date +%s%N)
  after=$(cpu_snapshot)
  [[ -z $perfpid ]] || wait "$perfpid" || true
  local errors=""
  if grep -q 'Non-2xx\|Socket errors' "$out"; then
    errors=" ERRORS: $(grep 'Non-2xx\|Socket errors' "$out" | tr -s ' ' | tr '\n' ';')"
  fi
  local rps p50 p99 requests s0 p0 s1 p1 sys=- cs=-
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  requests=$(awk '/requests in/ { print $1; exit }' "$out")
  read -r s0 p0 _ <<<"$before"
  read -r s1 p1 _ <<<"$after"
  local server_us pg_us
  server_us=$(awk -v t="$((s1 - s0))" -v tck="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.0f", t * 1e6 / tck / n }')
  pg_us=$(awk -v t="$((p1 - p0))" -v tck="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.0f", t * 1e6 / tck / n }')
  if [[ $PERF -eq 1 ]]; then
    # perf counts over DURATION seconds; wrk's request count over its own run of the same length.
    sys=$(awk -F, -v n="$requests" '$3 == "raw_syscalls:sys_enter" { printf "%.1f", $1 / n }' "$perfout")
    cs=$(awk -F, -v n="$requests" '$3 == "context-switches" { printf "%.2f", $1 / n }' "$perfout")
  fi
  local threads
  threads=$(ls "/proc/$SERVER_PID/task" | wc -l)
  echo "$name $endpoint: $rps req/s, p50 $p50 ms, p99 $p99 ms; per request: server $server_us us, postgres $pg_us us," \
       "$sys syscalls, $cs context switches; $threads threads; load $(cut -d' ' -f1 /proc/loadavg)$errors"
  ROWS+=("$name $endpoint $rps $p50 $p99 $server_us $pg_us $sys $cs")
}

# pgbench ENDPOINT SCRIPT: the floor of one endpoint; appends a row (PostgreSQL CPU per transaction).
floor() {
  local endpoint=$1 script=$2 out=$RUN_DIR/pgbench.out before after vars=()
  if [[ $endpoint = list ]]; then vars=(-D "p1=$TOKEN" -D "p2=$WORKSPACE" -D p3=false); else vars=(-D "p1=$TOKEN" -D "p2=$LIVE_CHAT"); fi
  # (cpu_snapshot wants a running server: without one, /proc//stat is /proc/stat.)
  before=$(postgres_ticks)
  pgbench -n -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" -f "$script" "${vars[@]}" "$DB_URL" >"$out" 2>&1 ||
    { cat "$out"; die "pgbench failed"; }
  sleep 0.5  # pgbench's backends exit: reaped, their time is in the postmaster's cutime
  after=$(postgres_ticks)
  local tps transactions pg_us lat
  tps=$(awk '/^tps = / { printf "%.0f", $3 }' "$out")
  transactions=$(awk '/^number of transactions actually processed:/ { print $6 }' "$out")
  lat=$(awk '/^latency average/ { print $4 }' "$out")
  pg_us=$(awk -v t="$((after - before))" -v tck="$CLK_TCK" -v n="$transactions" 'BEGIN { printf "%.0f", t * 1e6 / tck / n }')
  echo "pgbench $endpoint: $tps tps, average latency $lat ms; per transaction: postgres $pg_us us"
  ROWS+=("pgbench $endpoint $tps - - - $pg_us - -")
}

main_compare() {
  stop_services_on_exit stop_server
  RUN_DIR=$(mktemp -d /tmp/streamlock-compare.XXXXXX)
  chmod 755 "$RUN_DIR"
  start_services
  start_binary "${BINARIES[0]}"  # creates the schema
  seed >/dev/null
  warm_up
  stop_server
  local list_script=$RUN_DIR/list.pgbench chat_script=$RUN_DIR/chat.pgbench
  if [[ $PGBENCH -eq 1 ]]; then
    [[ -x $BUILD_DIR/print_sql ]] || die "no $BUILD_DIR/print_sql: run bench/load.sh once, or give --build-dir"
    make_pgbench_script list "$list_script"
    make_pgbench_script chat "$chat_script"
  fi
  echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  local r i endpoint
  for ((r = 1; r <= ROUNDS; r++)); do
    echo "== round $r"
    for i in "${!NAMES[@]}"; do
      # shellcheck disable=SC2086  # the flags are words
      start_binary "${BINARIES[i]}" ${FLAGSETS[i]} >/dev/null
      warm_up
      for endpoint in ${ENDPOINTS//,/ }; do measure "${NAMES[i]}" "$endpoint"; done
      stop_server
    done
    if [[ $PGBENCH -eq 1 ]]; then
      for endpoint in ${ENDPOINTS//,/ }; do floor "$endpoint" "$RUN_DIR/$endpoint.pgbench"; done
    fi
  done
  echo
  echo "== medians over $ROUNDS rounds (wrk -t2 -c$CONNECTIONS -d${DURATION}s)"
  echo
  echo "| configuration | endpoint | requests/s | p50 ms | p99 ms | server us/req | postgres us/req | syscalls/req | cs/req |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  local name col values
  for name in "${NAMES[@]}" pgbench; do
    for endpoint in ${ENDPOINTS//,/ }; do
      local line="| $name | $endpoint |" found=0
      for col in 3 4 5 6 7 8 9; do
        values=$(printf '%s\n' "${ROWS[@]}" | awk -v n="$name" -v e="$endpoint" -v c="$col" '$1 == n && $2 == e { print $c }')
        [[ -n $values ]] || continue
        found=1
        # shellcheck disable=SC2086
        line+=" $(median $values) ($(echo $values | tr ' ' '/')) |"
      done
      [[ $found -eq 0 ]] || echo "$line"
    done
  done
}

main_compare
