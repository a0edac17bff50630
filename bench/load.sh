#!/usr/bin/env bash
# The load test of the demo server: installs what is missing from Debian (wrk among them), builds
# mothership_server in Release into build-load/, starts a throwaway Redis and PostgreSQL on free
# loopback ports, seeds one workspace of 50 chats, and measures with wrk (loopback only, bounded in
# time) the list and single-chat endpoints against their floor: pgbench -M prepared running each
# endpoint's own SQL with the same parameters; after each steady run, the same with Redis paused
# (SIGSTOP), so that the breaker opens. Prints each run, then a markdown summary (== summary) that
# bench/report.sh copies into BENCHMARKS.md.
#
# Usage: bench/load.sh [--build-dir DIR] [--duration S] [--connections N] [--rounds N] [--sweep]
#                      [--] [SERVER FLAGS...]
#   --build-dir DIR, -B DIR   build directory (default: <repo>/build-load)
#   --duration S              seconds of each wrk and pgbench run (default 10)
#   --connections N           wrk connections and pgbench clients (default 32)
#   --rounds N                list endpoint: N alternating pairs of its pgbench floor and its steady
#                             run (default 5); the targets use the medians, since the speed of a
#                             shared machine drifts between runs
#   --sweep                   afterwards, a fresh server with the main runs' flags for each of
#                             8, 32, 128 and 512 wrk connections (both endpoints, 5 s each), then
#                             the list endpoint under a few other server flags
#   -h, --help                this text
#   SERVER FLAGS              passed to mothership_server, e.g. -- --pg-pool-size 8 (default: none,
#                             the server's defaults, which are its fast configuration: see
#                             bench/load/tuning.md)
#
# The workspace: 50 mothership chats of one user. A third are live (a marker and its Redis lock,
# SET ... EX 600), a third stuck (a marker and no lock), a third idle (no marker). The first read
# repairs the stuck third, so the "steady" runs measure the state after that repair: 17 markers
# looked up (one MGET) per list request, no repair. The "stuck" run re-sets the stuck markers every
# STREAMLOCK_LOAD_RESTICK_MS (default 20) ms during the run, so repairs run under load (their count
# is printed). The stuck markers are re-set and the locks refreshed before every run.
#
# wrk: -t2 -cN -dS --latency, bench/load/auth.lua adds the bearer token. pgbench: -n -M prepared
# -cN -j2 -TS, with the statement printed from examples/mothership_server/queries.cpp by
# bench/load/print_sql.cpp (the same text; see make_pgbench_script for the two mechanical
# rewrites pgbench needs). Whole run: about 90 s on two cores, 190 s with --sweep (plus the build).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config procps curl
  libhiredis-dev libpq-dev libssl-dev libfmt-dev libcpp-httplib-dev nlohmann-json3-dev
  redis-server postgresql wrk
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/services.sh
source "$ROOT/tests/services.sh"  # install_debian_packages, start_redis, start_postgres...
BUILD_DIR=$ROOT/build-load
DURATION=10
ROUNDS=5
CONNECTIONS=32
SWEEP=0
SERVER_FLAGS=()
RESTICK_MS=${STREAMLOCK_LOAD_RESTICK_MS:-20}
RUN_DIR=""        # temp dir holding both servers' data, removed on exit
REDIS_PID=""      # set by start_redis and start_postgres (tests/services.sh), for cleanup
REDIS_PORT=""
PG_DATA=""
DB_URL=""
REDIS_URL=""
SERVER_PID=""
SERVER_URL=""
TOKEN=""
SUMMARY=()        # markdown rows of the runs
START_TIME=$(date +%s)
CLK_TCK=$(getconf CLK_TCK)

WORKSPACE="load-workspace"
USER_ID="load-user"
LIVE_CHAT=10ad0000-0000-4000-8000-000000000001  # chat 1: live, the single-chat endpoint's chat
# Chat i (1..50): i % 3 = 1 live, i % 3 = 2 stuck, i % 3 = 0 idle.
CHAT_ID_SQL="('10ad0000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid"

use_script_messages bench/load.sh "${BASH_SOURCE[0]}"  # log, die, usage (tests/services.sh)

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h|--help) usage; exit 0 ;;
      -B|--build-dir) [[ $# -ge 2 ]] || die "$1 needs a directory"; BUILD_DIR=$2; shift 2 ;;
      --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
      --duration) [[ $# -ge 2 ]] || die "$1 needs seconds"; DURATION=$2; shift 2 ;;
      --connections) [[ $# -ge 2 ]] || die "$1 needs a number"; CONNECTIONS=$2; shift 2 ;;
      --rounds) [[ $# -ge 2 ]] || die "$1 needs a number"; ROUNDS=$2; shift 2 ;;
      --sweep) SWEEP=1; shift ;;
      --) shift; SERVER_FLAGS+=("$@"); break ;;
      *) die "unknown argument $1 (server flags go after --)" ;;
    esac
  done
  [[ $DURATION =~ ^[1-9][0-9]*$ && $DURATION -le 120 ]] || die "--duration wants 1..120 seconds"
  [[ $CONNECTIONS =~ ^[1-9][0-9]*$ && $CONNECTIONS -le 256 ]] || die "--connections wants 1..256"
  [[ $ROUNDS =~ ^[1-9][0-9]*$ && $ROUNDS -le 20 ]] || die "--rounds wants 1..20"
  [[ $BUILD_DIR = /* ]] || BUILD_DIR=$PWD/$BUILD_DIR
}

# Prints a command, then runs it.
run() {
  printf '+ %s\n' "$(printf '%q ' "$@")"
  "$@"
}

install_packages() { install_debian_packages "${PACKAGES[@]}"; }

configure_and_build() {
  local args=(-S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSTREAMLOCK_BUILD_EXAMPLES=ON
              -DSTREAMLOCK_BUILD_TESTS=OFF -DSTREAMLOCK_BUILD_BENCHMARKS=OFF -DSTREAMLOCK_INSTALL=OFF)
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    if command -v ninja >/dev/null; then args+=(-G Ninja); else args+=(-G "Unix Makefiles"); fi
  fi
  mkdir -p "$BUILD_DIR"
  printf '+ %s\n' "$(printf '%q ' cmake "${args[@]}")"
  cmake "${args[@]}" >"$BUILD_DIR/load-configure.log" 2>&1 || { cat "$BUILD_DIR/load-configure.log"; die "cmake failed"; }
  run cmake --build "$BUILD_DIR" --parallel "$(nproc)" --target mothership_server streamlock
  # The SQL printer: includes queries.cpp, links the library it calls into.
  local lib=""
  for lib in "$BUILD_DIR"/lib/libstreamlock.a "$BUILD_DIR"/lib/libstreamlock.so ""; do [[ ! -f $lib ]] || break; done
  [[ -n $lib ]] || die "no libstreamlock in $BUILD_DIR/lib"
  local libs
  read -ra libs <<<"$(pkg-config --libs hiredis libpq fmt)"
  run c++ -std=c++17 -O1 -I"$ROOT/include" -I"$BUILD_DIR/include" -I/usr/include/postgresql \
    "$ROOT/bench/load/print_sql.cpp" "$lib" "${libs[@]}" -pthread -o "$BUILD_DIR/print_sql"
}

# Redis and PostgreSQL come from tests/services.sh; PostgreSQL without pg_stat_statements, which
# would add its bookkeeping to every statement of both the floor and the server.
start_services() {
  start_redis "$RUN_DIR/redis"
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  start_postgres "$RUN_DIR/postgres" "shared_preload_libraries = ''"
  local url="postgresql://postgres@127.0.0.1:$PG_PORT"
  "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 "$url/postgres" -c 'CREATE DATABASE streamlock_load'
  DB_URL="$url/streamlock_load"
}

psql_db() { "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 "$DB_URL" "$@"; }

# ---- the server ----

start_server() {
  local out=$RUN_DIR/server.out err=$RUN_DIR/server.err i
  : >"$out"
  printf '+ %s\n' "$(printf '%q ' "$BUILD_DIR/examples/mothership_server/mothership_server" --listen 127.0.0.1:0 \
    --database-url "$DB_URL" --redis-url "$REDIS_URL" "$@")"
  # The access log (one line per request on stderr) goes to a file, as it would under a supervisor.
  "$BUILD_DIR/examples/mothership_server/mothership_server" --listen 127.0.0.1:0 --database-url "$DB_URL" \
    --redis-url "$REDIS_URL" "$@" </dev/null >"$out" 2>>"$err" &
  SERVER_PID=$!
  for ((i = 0; i < 200; i++)); do
    if grep -q '^listening on ' "$out"; then
      SERVER_URL=$(sed -n 's/^listening on //p' "$out" | head -n 1)
      log "mothership_server pid $SERVER_PID on $SERVER_URL"
      return
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$err" >&2; die "mothership_server exited"; }
    sleep 0.1
  done
  die "mothership_server did not start"
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# ---- the workspace ----

seed() {
  TOKEN="load-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  psql_db <<SQL
INSERT INTO users (id, email, name) VALUES ('$USER_ID', 'load@example.com', 'Load User');
INSERT INTO workspaces (id, name) VALUES ('$WORKSPACE', 'Load workspace');
INSERT INTO workspace_members (workspace_id, user_id) VALUES ('$WORKSPACE', '$USER_ID');
INSERT INTO api_keys (token_sha256, user_id)
  VALUES (encode(sha256(convert_to('$TOKEN', 'UTF8')), 'hex'), '$USER_ID');
INSERT INTO copilot_chats (id, user_id, workspace_id, type, title, conversation_id, messages,
                           last_seen_at, pinned, created_at, updated_at)
SELECT $CHAT_ID_SQL, '$USER_ID', '$WORKSPACE', 'mothership', 'Load chat ' || i,
  CASE i % 3 WHEN 1 THEN 'live-stream-' || i WHEN 2 THEN 'stuck-stream-' || i END,
  jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Question ' || i),
                    jsonb_build_object('role', 'assistant', 'content', repeat('An answer. ', 40))),
  now() - make_interval(mins => i), i % 10 = 0,
  now() - make_interval(days => 1, mins => i), now() - make_interval(mins => i)
FROM generate_series(1, 50) AS i;
ANALYZE;
SQL
  reset_state
  log "seeded workspace $WORKSPACE: 50 chats (17 live, 17 stuck, 16 idle)"
}

# Sets the 17 live locks (EX 600) and re-sets the 34 markers of the live and stuck chats.
reset_state() {
  local i args=()
  for ((i = 1; i <= 50; i += 3)); do
    args+=("SET copilot:chat-stream-lock:$(printf '10ad0000-0000-4000-8000-%012d' "$i") live-stream-$i EX 600")
  done
  printf '%s\n' "${args[@]}" | redis-cli -h 127.0.0.1 -p "$REDIS_PORT" >/dev/null
  psql_db -c "UPDATE copilot_chats SET conversation_id = CASE i % 3 WHEN 1 THEN 'live-stream-' ELSE 'stuck-stream-' END || i
              FROM generate_series(1, 50) AS i WHERE i % 3 <> 0 AND id = $CHAT_ID_SQL"
}

# ---- measuring ----

list_url() { echo "$SERVER_URL/api/mothership/chats?workspaceId=$WORKSPACE"; }
chat_url() { echo "$SERVER_URL/api/mothership/chats/$LIVE_CHAT"; }

get() { curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $TOKEN" "$1"; }

metric() {  # metric NAME_WITH_LABELS: its value from /metrics (0 when absent)
  curl -sS --max-time 5 "$SERVER_URL/metrics" | awk -v name="$1" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}

ticks_of() {  # utime + stime (+ cutime + cstime with "children") of a pid, in clock ticks
  awk -v children="${2:-}" '{ sub(/^.*\) /, ""); t = $12 + $13; if (children != "") t += $14 + $15; print t }' \
    "/proc/$1/stat" 2>/dev/null || echo 0
}

postgres_ticks() {  # the postmaster, its live children, and its reaped children
  local postmaster total pid
  postmaster=$(head -n 1 "$PG_DATA/postmaster.pid")
  total=$(ticks_of "$postmaster" children)
  for pid in $(ps --ppid "$postmaster" -o pid=); do total=$((total + $(ticks_of "$pid"))); done
  echo "$total"
}

# The machine's steal time: while it was runnable, the hypervisor ran something else. On the VMs
# of this project's machines it comes as whole-machine pauses of about 100 ms once both cores are
# busy (bench/load/tuning.md, "The tail"); pgbench's max latency shows them too.
steal_ticks() { awk '$1 == "cpu" { print $9; exit }' /proc/stat; }

cpu_snapshot() { echo "$(ticks_of "$SERVER_PID") $(postgres_ticks) $(ticks_of "$REDIS_PID") $(steal_ticks)"; }


# Milliseconds from a wrk duration ("812.00us", "1.23ms", "2.01s", "1.00m").
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    printf "%.2f", n }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f", 100 * a / b; else print "-" }'; }

hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER_PID/status"; }

# run_wrk LABEL URL [SECONDS]: one wrk run; sets RPS P50 P99 MAX CPU_* US_PER_REQ, appends a summary row.
RPS=0 P50=0 P99=0 MAX=0 CPU_SERVER=0 CPU_PG=0 CPU_TOTAL=0 US_PER_REQ=0 STEAL=0
run_wrk() {
  local label=$1 url=$2 seconds=${3:-$DURATION} out=$RUN_DIR/wrk.out times=$RUN_DIR/wrk.time
  local before after load elapsed
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo
  echo "== wrk: $label"
  # shellcheck disable=SC2016  # $TOKEN is printed, not expanded
  printf '+ wrk -t2 -c%s -d%ss --latency -s bench/load/auth.lua %q -- "$TOKEN"\n' "$CONNECTIONS" "$seconds" "$url"
  before=$(cpu_snapshot)
  local t0 t1
  t0=$(date +%s%N)
  TIMEFORMAT='%U %S'
  { time wrk -t2 -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$ROOT/bench/load/auth.lua" "$url" -- "$TOKEN" \
      >"$out"; } 2>"$times"
  t1=$(date +%s%N)
  after=$(cpu_snapshot)
  cat "$out"
  if grep -q 'Non-2xx\|Socket errors' "$out"; then die "$label: wrk saw errors (see above)"; fi
  RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
  P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  MAX=$(to_ms "$(awk '$1 == "Latency" { print $4; exit }' "$out")")
  elapsed=$(( (t1 - t0) / 1000000 ))  # ms
  read -r s0 p0 r0 st0 <<<"$before"
  read -r s1 p1 r1 st1 <<<"$after"
  local wrk_ticks requests
  wrk_ticks=$(tail -n 1 "$times" | awk -v tck="$CLK_TCK" '{ printf "%.0f", ($1 + $2) * tck }')
  requests=$(awk '/requests in/ { print $1; exit }' "$out")
  local cpu_s cpu_p cpu_r cpu_w us_per_req
  cpu_s=$(pct "$(( (s1 - s0) * 1000 / CLK_TCK ))" "$elapsed")
  cpu_p=$(pct "$(( (p1 - p0) * 1000 / CLK_TCK ))" "$elapsed")
  cpu_r=$(pct "$(( (r1 - r0) * 1000 / CLK_TCK ))" "$elapsed")
  cpu_w=$(pct "$(( wrk_ticks * 1000 / CLK_TCK ))" "$elapsed")
  STEAL=$(pct "$(( (st1 - st0) * 1000 / CLK_TCK ))" "$elapsed")
  us_per_req=$(awk -v t="$((s1 - s0))" -v tck="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.0f", t * 1e6 / tck / n }')
  PG_US_PER_REQ=$(awk -v t="$((p1 - p0))" -v tck="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.0f", t * 1e6 / tck / n }')
  echo "server peak RSS (VmHWM): $(hwm_mib) MiB; CPU over the run (100% = one core): server ${cpu_s}%," \
       "postgres ${cpu_p}%, redis ${cpu_r}%, wrk ${cpu_w}%; total $((cpu_s + cpu_p + cpu_r + cpu_w))% of $(( $(nproc) * 100 ))%;" \
       "server CPU per request ${us_per_req} us, PostgreSQL CPU per request ${PG_US_PER_REQ} us; hypervisor steal ${STEAL}%;" \
       "load average before $load"
  CPU_SERVER=$cpu_s CPU_PG=$cpu_p CPU_CLIENT=$cpu_w CPU_TOTAL=$((cpu_s + cpu_p + cpu_r + cpu_w)) US_PER_REQ=$us_per_req
  SUMMARY+=("| $label | $RPS | $P50 | $P99 | $MAX | $(hwm_mib) | $cpu_s / $cpu_p / $cpu_r / $cpu_w | $CPU_TOTAL | $STEAL | $us_per_req |")
}

# The endpoint's SQL as a pgbench script. Two mechanical rewrites, both printed: pgbench reads
# ":name" as a variable, so (1) the to_char format's two colons are written \x3a in an E'' literal,
# which parses to the same constant (checked below: both forms return the same rows), and (2) each
# $N becomes :pN, which pgbench -M prepared sends as a parameter again (it numbers every occurrence,
# so a $2 used twice becomes $2 and $3: the same values, the same plan shape).
make_pgbench_script() {  # make_pgbench_script list|chat FILE
  local sql rewritten
  sql=$("$BUILD_DIR/print_sql" "$1")
  rewritten=$(printf '%s' "$sql" | sed -E -e "s/'YYYY-MM-DD\"T\"HH24:MI:SS\.MS\"Z\"'/E'YYYY-MM-DD\"T\"HH24\\\\x3aMI\\\\x3aSS.MS\"Z\"'/g")
  # The rewrite must leave the rows unchanged: run both texts as prepared statements.
  local args=("'$TOKEN'" "'$WORKSPACE'" "false")
  [[ $1 = list ]] || args=("'$TOKEN'" "'$LIVE_CHAT'")
  local a b
  a=$(psql_db -A -t -c "PREPARE q AS $sql" -c "EXECUTE q($(IFS=,; echo "${args[*]}"))" | md5sum)
  b=$(psql_db -A -t -c "PREPARE q AS $rewritten" -c "EXECUTE q($(IFS=,; echo "${args[*]}"))" | md5sum)
  [[ $a = "$b" ]] || die "the pgbench form of the $1 SQL returns other rows than the server's"
  # shellcheck disable=SC2016  # sed's $, not the shell's
  rewritten=$(printf '%s' "$rewritten" | sed -E 's/\$([0-9]+)/:p\1/g')
  # Any other ":name" would be taken for a variable.
  if printf '%s' "$rewritten" | grep -oE '(^|[^:]):[A-Za-z_][A-Za-z0-9_]*' | grep -vqE ':p[0-9]+$'; then
    die "the $1 SQL has a ':name' that pgbench would read as a variable"
  fi
  printf '%s;\n' "$rewritten" >"$2"
}

# run_pgbench LABEL SCRIPT VARS...: one pgbench run; sets TPS TPS_P50 TPS_P99, appends a summary row.
TPS=0 TPS_P50=0 TPS_P99=0
run_pgbench() {
  local label=$1 script=$2; shift 2
  local vars=() v out=$RUN_DIR/pgbench.out times=$RUN_DIR/pgbench.time prefix=$RUN_DIR/pgblog
  for v in "$@"; do vars+=(-D "$v"); done
  echo
  echo "== pgbench: $label"
  echo "-- $(basename "$script") (the endpoint's SQL; \$N written :pN):"
  sed 's/^/   /' "$script"
  local shown
  shown=$(printf -- '-D %q ' "$@" | sed "s/$TOKEN/\$TOKEN/")
  printf '+ pgbench -n -M prepared -c %s -j 2 -T %s -l -f %s %s%s\n' "$CONNECTIONS" "$DURATION" \
    "$(basename "$script")" "$shown" "$DB_URL"
  rm -f "$prefix".*
  local before after t0 t1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  before=$(cpu_snapshot)
  t0=$(date +%s%N)
  TIMEFORMAT='%U %S'
  { time pgbench -n -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" -l --log-prefix="$prefix" \
      -f "$script" "${vars[@]}" "$DB_URL" >"$out" 2>&1; } 2>"$times" || { cat "$out"; die "pgbench failed"; }
  t1=$(date +%s%N)
  after=$(cpu_snapshot)
  grep -v '^pgbench (' "$out"
  TPS=$(awk '/^tps = / { printf "%.0f", $3 }' "$out")
  # Per-transaction latencies (column 3, microseconds) from the -l logs.
  local p50 p99 max
  read -r p50 p99 max < <(cat "$prefix".* | awk '{ print $3 }' | sort -n | awk '
    { v[NR] = $1 } END { printf "%.2f %.2f %.2f\n", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000, v[NR] / 1000 }')
  local elapsed=$(( (t1 - t0) / 1000000 )) p0 p1 pgb
  read -r _ p0 _ st0 <<<"$before"
  read -r _ p1 _ st1 <<<"$after"
  pgb=$(tail -n 1 "$times" | awk -v tck="$CLK_TCK" '{ printf "%.0f", ($1 + $2) * tck }')
  TPS_P50=$p50 TPS_P99=$p99
  local transactions
  transactions=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }' "$out")
  PG_US_PER_TX=$(awk -v t="$((p1 - p0))" -v tck="$CLK_TCK" -v n="$transactions" 'BEGIN { printf "%.0f", (n > 0 ? t * 1e6 / tck / n : 0) }')
  local cpu_p cpu_b
  cpu_p=$(pct "$(( (p1 - p0) * 1000 / CLK_TCK ))" "$elapsed")
  cpu_b=$(pct "$(( pgb * 1000 / CLK_TCK ))" "$elapsed")
  STEAL=$(pct "$(( (st1 - st0) * 1000 / CLK_TCK ))" "$elapsed")
  echo "latency p50 $p50 ms, p99 $p99 ms, max $max ms; CPU (100% = one core): postgres ${cpu_p}%," \
       "pgbench ${cpu_b}%; PostgreSQL CPU per transaction ${PG_US_PER_TX} us; hypervisor steal ${STEAL}%;" \
       "load average before $load"
  SUMMARY+=("| $label | $TPS | $p50 | $p99 | $max | - | - / $cpu_p / - / $cpu_b | $((cpu_p + cpu_b)) | $STEAL | - |")
}

# A short burst that opens every pooled connection and prepares the statements; not measured.
warm_up() {
  [[ $(get "$(list_url)") = 200 ]] || die "the list endpoint does not answer 200"
  [[ $(get "$(chat_url)") = 200 ]] || die "the chat endpoint does not answer 200"
  wrk -t2 -c"$CONNECTIONS" -d2s -s "$ROOT/bench/load/auth.lua" "$(list_url)" -- "$TOKEN" >/dev/null
  wrk -t2 -c"$CONNECTIONS" -d1s -s "$ROOT/bench/load/auth.lua" "$(chat_url)" -- "$TOKEN" >/dev/null
}

# Waits until the server has answered what a finished wrk run left queued (with hundreds of
# connections, requests read before wrk closed them are still served afterwards, and a list read
# among them would repair the markers that steady_state re-sets).
wait_quiet() {
  local last=-1 now i
  for ((i = 0; i < 100; i++)); do
    now=$(curl -sS --max-time 5 "$SERVER_URL/metrics" |
          awk '$1 ~ /^mothership_http_requests_total\{route="\/api\/mothership\/chats/ { n += $2 } END { print n + 0 }')
    [[ $now = "$last" ]] && return 0
    last=$now
    sleep 0.1
  done
  die "the server still answers chat requests 10 s after the load stopped"
}

# Re-sets the state, then lets one read repair the stuck third: the steady state.
steady_state() {
  wait_quiet
  reset_state
  local before
  before=$(metric streamlock_markers_repaired_total)
  [[ $(get "$(list_url)") = 200 ]] || die "the list endpoint does not answer 200"
  local repaired=$(( $(metric streamlock_markers_repaired_total) - before )) markers
  markers=$(psql_db -A -t -c "SELECT count(*) FILTER (WHERE conversation_id LIKE 'live-%') || ' ' ||
                                     count(*) FILTER (WHERE conversation_id LIKE 'stuck-%') FROM copilot_chats")
  [[ $repaired = 17 && $markers = "17 0" ]] ||
    die "steady state not reached: $repaired repaired, live/stuck markers left: $markers (want 17, 17 0)"
  echo "state: locks refreshed, markers re-set; one list read repaired the 17 stuck ones" \
       "(steady state: 17 live markers looked up per list read, no repair)"
}

# ---- the scenarios ----

# Redis paused (SIGSTOP) for one wrk run of ENDPOINT (list|chat), from its first request to its
# end: the first lookups wait out the deadline, the breaker opens after 3 failures, then one probe
# per cool-down waits while the others answer unknown at once. Sets RPS P99 MAX as run_wrk does.
paused_run() {
  local endpoint=$1 route=/api/mothership/chats c
  [[ $endpoint = list ]] || route+="/{chatId}"
  local bucket="mothership_http_request_duration_seconds_bucket{route=\"$route\",le="
  local counters=(streamlock_redis_timeouts_total streamlock_breaker_opened_total
                  streamlock_breaker_short_circuits_total 'streamlock_lookups_total{status="unknown"}'
                  "${bucket}\"0.25\"}" "${bucket}\"0.5\"}" "${bucket}\"+Inf\"}")
  steady_state
  local before=()
  for c in "${counters[@]}"; do before+=("$(metric "$c")"); done
  echo
  echo "state: Redis paused (SIGSTOP) from the start of the next run"
  kill -STOP "$REDIS_PID"
  run_wrk "$endpoint, Redis paused" "$("${endpoint}_url")"
  kill -CONT "$REDIS_PID"
  local i=0 deltas=()
  for c in "${counters[@]}"; do deltas+=("$(( $(metric "$c") - before[i++] ))"); done
  echo "during the run ($endpoint): ${deltas[0]} Redis timeouts, breaker opened ${deltas[1]} time(s)," \
       "${deltas[2]} lookups short-circuited, ${deltas[3]} lookups unknown; server-side" \
       "(mothership_http_request_duration_seconds): $((deltas[6] - deltas[4])) of ${deltas[6]} requests over 0.25 s," \
       "$((deltas[6] - deltas[5])) over 0.5 s"
  [[ ${deltas[0]} -gt 0 && ${deltas[1]} -gt 0 ]] || die "the Redis-paused run never reached the breaker"
  sleep 1.2  # the cool-down; then a probe closes the breaker
  get "$(list_url)" >/dev/null
}

main_runs() {
  local list_script=$RUN_DIR/list.pgbench chat_script=$RUN_DIR/chat.pgbench
  make_pgbench_script list "$list_script"
  make_pgbench_script chat "$chat_script"
  warm_up

  # The list endpoint: ROUNDS alternating pairs of its floor and its steady state (the medians are
  # the figures, as the machine's speed drifts), then Redis paused right after the last pair (so
  # that "normal" is the run next to it in time). The chat endpoint: one pair, then Redis paused.
  local r floors=() floor_ratios=() rpss=() p50s=() p99s=() effs=() tails=() cpus=() servers=() pgs=() uss=()
  local pg_txs=() pg_reqs=() clients=() steals=() floor_steals=()
  for ((r = 1; r <= ROUNDS; r++)); do
    steady_state
    run_pgbench "floor: pgbench, list SQL (round $r)" "$list_script" "p1=$TOKEN" "p2=$WORKSPACE" "p3=false"
    floors+=("$TPS") pg_txs+=("$PG_US_PER_TX") floor_steals+=("$STEAL")
    floor_ratios+=("$(awk -v a="$TPS_P99" -v b="$TPS_P50" 'BEGIN { printf "%.2f", a / b }')")
    steady_state
    run_wrk "list, steady (round $r)" "$(list_url)"
    rpss+=("$RPS") p50s+=("$P50") p99s+=("$P99") cpus+=("$CPU_TOTAL") servers+=("$CPU_SERVER") pgs+=("$CPU_PG")
    uss+=("$US_PER_REQ") pg_reqs+=("$PG_US_PER_REQ") clients+=("$CPU_CLIENT") steals+=("$STEAL")
    effs+=("$(awk -v a="$RPS" -v b="$TPS" 'BEGIN { printf "%.3f", a / b }')")
    tails+=("$(awk -v a="$P99" -v b="$P50" 'BEGIN { printf "%.2f", a / b }')")
  done
  local floor_list list_rps list_p50 list_p99 list_cpu list_server list_pg list_us floor_list_ratio list_eff list_tail
  floor_list=$(median "${floors[@]}") floor_list_ratio=$(median "${floor_ratios[@]}")
  list_rps=$(median "${rpss[@]}") list_p50=$(median "${p50s[@]}") list_p99=$(median "${p99s[@]}")
  list_cpu=$(median "${cpus[@]}") list_server=$(median "${servers[@]}") list_pg=$(median "${pgs[@]}")
  list_us=$(median "${uss[@]}") list_eff=$(median "${effs[@]}") list_tail=$(median "${tails[@]}")
  local list_pg_tx list_pg_req list_client
  list_pg_tx=$(median "${pg_txs[@]}") list_pg_req=$(median "${pg_reqs[@]}") list_client=$(median "${clients[@]}")
  local rounds_table=("| round | pgbench tps | list requests/s | efficiency | list p50 ms | list p99 ms | p99/p50 | pgbench p99/p50 | steal % pgbench / list |"
                      "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for ((r = 0; r < ROUNDS; r++)); do
    rounds_table+=("| $((r + 1)) | ${floors[r]} | ${rpss[r]} | $(pct "${rpss[r]}" "${floors[r]}")% | ${p50s[r]} | ${p99s[r]} | ${tails[r]}x | ${floor_ratios[r]}x | ${floor_steals[r]} / ${steals[r]} |")
  done
  rounds_table+=("| median | $floor_list | $list_rps | $(awk -v e="$list_eff" 'BEGIN { printf "%.0f", 100 * e }')% | $list_p50 | $list_p99 | ${list_tail}x | ${floor_list_ratio}x | $(median "${floor_steals[@]}") / $(median "${steals[@]}") |")
  local paused=()
  paused_run list
  paused+=("$RPS" "$P99" "$MAX")

  reset_state
  local repaired0
  repaired0=$(metric streamlock_markers_repaired_total)
  echo
  echo "state: the 17 stuck markers are re-set every ${RESTICK_MS} ms during the next run"
  PGAPPNAME=load-restick "$(pg_bindir)/psql" -X -q "$DB_URL" -c "DO \$\$ BEGIN LOOP
      UPDATE copilot_chats SET conversation_id = 'stuck-stream-' || i
        FROM generate_series(2, 50, 3) AS i WHERE id = $CHAT_ID_SQL AND conversation_id IS NULL;
      COMMIT; PERFORM pg_sleep($RESTICK_MS / 1000.0); END LOOP; END \$\$" >/dev/null 2>&1 &
  local restick=$!
  run_wrk "list, stuck re-set every ${RESTICK_MS} ms" "$(list_url)"
  psql_db -A -t -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'load-restick'" >/dev/null
  wait "$restick" 2>/dev/null || true
  local repaired=$(( $(metric streamlock_markers_repaired_total) - repaired0 ))
  echo "markers repaired during the run: $repaired ($(awk -v r="$repaired" 'BEGIN { printf "%.1f", r / 17 }') rounds of 17)"
  SUMMARY[-1]="${SUMMARY[-1]% |} ($repaired repaired) |"

  steady_state
  run_pgbench "floor: pgbench, chat SQL" "$chat_script" "p1=$TOKEN" "p2=$LIVE_CHAT"
  local floor_chat=$TPS floor_chat_ratio chat_pg_tx=$PG_US_PER_TX
  floor_chat_ratio=$(awk -v a="$TPS_P99" -v b="$TPS_P50" 'BEGIN { printf "%.1f", a / b }')
  steady_state
  run_wrk "chat (live), steady" "$(chat_url)"
  local chat_rps=$RPS chat_p50=$P50 chat_p99=$P99 chat_pg_req=$PG_US_PER_REQ chat_client=$CPU_CLIENT
  paused_run chat
  paused+=("$RPS" "$P99" "$MAX")

  local hwm
  hwm=$(hwm_mib)
  echo
  echo "== summary"
  echo
  echo "Server flags: ${SERVER_FLAGS[*]:-none} (the server's defaults: $(server_defaults))." \
       "wrk -t2 -c$CONNECTIONS -d${DURATION}s --latency; pgbench -n -M prepared -c $CONNECTIONS -j 2 -T $DURATION." \
       "CPU: each process's user+system time over the run, 100% = one core of $(nproc); the client is wrk or pgbench." \
       "Latencies of the pgbench rows are per transaction, from its -l log. wrk's percentiles include its" \
       "coordinated-omission correction (stats_correct: a response slower than twice its connection's mean" \
       "interval adds the samples the connection could not send meanwhile), so a few 250 ms lookups move the p99 of" \
       "the Redis-paused runs; the server-side counts printed after those runs give the requests that really took" \
       "that long."
  echo
  echo "| run | requests/s | p50 ms | p99 ms | max ms | server VmHWM MiB | CPU % server / postgres / redis / client | CPU % total | steal % | server CPU us/req |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"
  printf '%s\n' "${SUMMARY[@]}"
  echo
  echo "The list endpoint's rounds, each a pgbench floor run then the server's run right after it:"
  echo
  printf '%s\n' "${rounds_table[@]}"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "NOT met"; fi; }
  echo "| list throughput >= 80% of its pgbench floor (median of $ROUNDS alternating pairs) | $(awk -v e="$list_eff" 'BEGIN { printf "%.0f", 100 * e }')% (rounds: $(for e in "${effs[@]}"; do awk -v e="$e" 'BEGIN { printf "%.0f%% ", 100 * e }'; done | sed 's/ $//')) | $(verdict "$list_eff >= 0.8") |"
  echo "| chat throughput >= 50% of its pgbench floor (one pair) | $chat_rps / $floor_chat = $(pct "$chat_rps" "$floor_chat")% | $(verdict "$chat_rps >= 0.5 * $floor_chat") |"
  echo "| list: PostgreSQL CPU per request <= per pgbench transaction (medians) | $list_pg_req vs $list_pg_tx us | $(verdict "$list_pg_req <= $list_pg_tx") |"
  echo "| chat: PostgreSQL CPU per request <= per pgbench transaction | $chat_pg_req vs $chat_pg_tx us | $(verdict "$chat_pg_req <= $chat_pg_tx") |"
  echo "| list p99 <= 4x p50, measured by wrk (median of $ROUNDS runs; wrk's CPU ${list_client}% of $(( $(nproc) * 100 ))%) | ${list_tail}x (rounds: $(printf '%sx ' "${tails[@]}" | sed 's/ $//')) | $(verdict "$list_tail <= 4") |"
  echo "| chat p99 <= 4x p50, measured by wrk (one run; wrk's CPU ${chat_client}%) | $chat_p99 / $chat_p50 ms = $(awk -v a="$chat_p99" -v b="$chat_p50" 'BEGIN { printf "%.1f", a / b }')x | $(verdict "$chat_p99 <= 4 * $chat_p50") |"
  echo "| server peak RSS <= 64 MiB | $hwm MiB | $(verdict "$hwm <= 64") |"
  echo "| Redis paused, list: p99 <= 255 ms (deadline + 5) | p99 ${paused[1]} ms, max ${paused[2]} ms | $(verdict "${paused[1]} <= 255") |"
  echo "| Redis paused, chat: p99 <= 255 ms | p99 ${paused[4]} ms, max ${paused[5]} ms | $(verdict "${paused[4]} <= 255") |"
  echo "| Redis paused, list: throughput within 20% of normal | ${paused[0]} vs $list_rps = $(pct "${paused[0]}" "$list_rps")% | $(verdict "${paused[0]} >= 0.8 * $list_rps") |"
  echo "| Redis paused, chat: throughput within 20% of normal | ${paused[3]} vs $chat_rps = $(pct "${paused[3]}" "$chat_rps")% | $(verdict "${paused[3]} >= 0.8 * $chat_rps") |"
  # What the figures say about the limit, from this run's own measurements.
  echo
  echo "What bounds the list runs (from the CPU columns):"
  local lo hi flo fhi ulo uhi
  lo=$(printf '%s\n' "${effs[@]}" | sort -g | head -n 1) hi=$(printf '%s\n' "${effs[@]}" | sort -g | tail -n 1)
  flo=$(printf '%s\n' "${floors[@]}" | sort -g | head -n 1) fhi=$(printf '%s\n' "${floors[@]}" | sort -g | tail -n 1)
  ulo=$(printf '%s\n' "${uss[@]}" | sort -g | head -n 1) uhi=$(printf '%s\n' "${uss[@]}" | sort -g | tail -n 1)
  echo "- The machine's speed drifts between runs a few seconds apart: pgbench alone gave $flo to $fhi tps" \
       "across the rounds, the server spent $ulo to $uhi us of CPU per request, and the efficiency of the" \
       "rounds ranged from $(awk -v e="$lo" 'BEGIN { printf "%.0f", 100 * e }')% to" \
       "$(awk -v e="$hi" 'BEGIN { printf "%.0f", 100 * e }')%. Hence the median of alternating pairs; see bench/load/tuning.md."
  if [[ $list_cpu -ge $(( $(nproc) * 90 )) ]]; then
    echo "- CPU-bound: the processes of the test used $list_cpu% of $(( $(nproc) * 100 ))% during the list run;" \
         "the server took $list_server% ($list_us us of CPU per request), PostgreSQL $list_pg%, on cores shared with wrk and Redis."
  else
    echo "- The processes of the test used only $list_cpu% of $(( $(nproc) * 100 ))% during the list run: other work" \
         "on the machine took the rest (load average $(cut -d' ' -f1 /proc/loadavg) now), or requests wait on" \
         "something else than CPU."
    if awk -v p="$list_p50" 'BEGIN { exit !(p >= 38 && p <= 50) }'; then
      echo "- The list p50 ($list_p50 ms) sits at the 40 ms delayed-ACK timer: responses sent in two segments without" \
           "TCP_NODELAY wait for the client's ACK (Nagle). See bench/load/tuning.md."
    fi
  fi
  # One pipelined connection is one backend, which runs one statement at a time.
  local pool ceiling
  pool=$(server_pool_size)
  ceiling=$(awk -v p="$pool" -v us="$list_pg_req" 'BEGIN { if (us > 0) printf "%.0f", p * 1e6 / us; else print 0 }')
  local backends="its $pool pipelined PostgreSQL connections are $pool backends, each" they="they serve"
  [[ $pool != 1 ]] || backends="its one pipelined PostgreSQL connection is one backend," they="it serves"
  echo "- The server's PostgreSQL backends bound it too: $backends running one statement at a time. At" \
       "$list_pg_req us of PostgreSQL CPU per list request (median), $they at most $ceiling requests/s, even with" \
       "nothing else on the machine: $(pct "$ceiling" "$floor_list")% of the median floor" \
       "($floor_list tps, where pgbench's $CONNECTIONS backends spend $list_pg_tx us per transaction on both cores)." \
       "PostgreSQL took $list_pg% of a core during the list runs (median)."
  if awk -v a="$floor_list_ratio" -v b="$floor_chat_ratio" 'BEGIN { exit !(a > 3 || b > 3) }'; then
    echo "- pgbench alone has p99/p50 = ${floor_list_ratio}x (list SQL) and ${floor_chat_ratio}x (chat SQL) here: a tail" \
         "over 3x p50 comes from scheduling $CONNECTIONS clients and PostgreSQL's backends on $(nproc) cores, with no" \
         "HTTP server in the path."
  else
    echo "- pgbench alone has p99/p50 = ${floor_list_ratio}x (list SQL) and ${floor_chat_ratio}x (chat SQL) here."
  fi
  local slo shi
  slo=$(printf '%s\n' "${steals[@]}" "${floor_steals[@]}" | sort -g | head -n 1)
  shi=$(printf '%s\n' "${steals[@]}" "${floor_steals[@]}" | sort -g | tail -n 1)
  if [[ $shi != - && $shi -ge 1 ]]; then
    echo "- The hypervisor took ${slo}% to ${shi}% of $(( $(nproc) * 100 ))% (steal time) during the list and pgbench" \
         "runs. Here that comes as pauses of the whole machine of about 100 ms (bench/load/tuning.md, \"The tail\"):" \
         "no process answers during one, pgbench's max latency shows them, and wrk's correction turns each into" \
         "the samples every connection could not send meanwhile, which is what moves a p99."
  fi
}

# The server's PostgreSQL pool size: --pg-pool-size from the flags of the runs, else the environment's
# STREAMLOCK_PG_POOL_SIZE, else the server's default.
server_pool_size() {
  local i size=""
  for ((i = 0; i < ${#SERVER_FLAGS[@]}; i++)); do
    case ${SERVER_FLAGS[i]} in
      --pg-pool-size) size=${SERVER_FLAGS[i + 1]:-} ;;
      --pg-pool-size=*) size=${SERVER_FLAGS[i]#*=} ;;
    esac
  done
  [[ -n $size ]] || size=${STREAMLOCK_PG_POOL_SIZE:-}
  [[ -n $size ]] || size=$(server_defaults | sed -n 's/.*--pg-pool-size \([0-9]*\).*/\1/p')
  echo "${size:-1}"
}

# The server's defaults, from its --help (a flag's "default N" may be on its continuation line).
server_defaults() {
  "$BUILD_DIR/examples/mothership_server/mothership_server" --help |
    awk '/^  --/ { flag = ($1 ~ /^--(max-connections|pg-pool-size|pg-pipeline-depth|redis-timeout-ms)$/) ? $1 : ""; done = 0 }
         flag != "" && !done && match($0, /default [0-9]+/) {
           printf "%s%s %s", sep, flag, substr($0, RSTART + 8, RLENGTH - 8); sep = ", "; done = 1 }'
}

# How the server degrades with the number of connections (its main runs' flags, a fresh server for
# each count), then the list endpoint under a few other server settings.
sweep() {
  local rows=() setting connections endpoint saved=$CONNECTIONS
  echo
  echo "== sweep: steady state, 5 s per run"
  for connections in 8 32 128 512; do
    stop_server
    start_server "${SERVER_FLAGS[@]}"
    CONNECTIONS=$connections
    warm_up
    for endpoint in list chat; do
      steady_state
      run_wrk "$endpoint, $connections connections" "$("${endpoint}_url")" 5
      rows+=("| $connections | ${SERVER_FLAGS[*]:-defaults} | $endpoint | $RPS | $P50 | $P99 | $MAX | $(hwm_mib) |")
    done
  done
  CONNECTIONS=$saved
  for setting in "--pg-pipeline-depth 1 --pg-pool-size 32" "--pg-pool-size 4 --pg-pipeline-depth 16" \
                 "--pg-pool-size 8 --pg-pipeline-depth 8"; do
    stop_server
    # shellcheck disable=SC2086
    start_server $setting
    warm_up
    steady_state
    run_wrk "list, $setting" "$(list_url)" 5
    rows+=("| $CONNECTIONS | \`$setting\` | list | $RPS | $P50 | $P99 | $MAX | $(hwm_mib) |")
  done
  echo
  echo "== sweep summary"
  echo
  echo "| wrk connections | server flags | endpoint | requests/s | p50 ms | p99 ms | max ms | VmHWM MiB |"
  echo "|---:|---|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
}

print_machine() {
  echo "== machine"
  echo "nproc: $(nproc)"
  echo "cpu: $(sed -n '/^model name/{s/^model name[[:space:]]*: //p;q}' /proc/cpuinfo)"
  echo "kernel: $(uname -srm)"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (wrk, the server, PostgreSQL and Redis share these cores)"
  echo "versions: $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2), $(pgbench --version), $(redis-server --version | cut -d' ' -f1-3)"
}

main() {
  parse_args "$@"
  stop_services_on_exit stop_server
  install_packages
  configure_and_build

  RUN_DIR=$(mktemp -d /tmp/streamlock-load.XXXXXX)
  chmod 755 "$RUN_DIR"  # the postgres user must reach its data dir inside
  start_services
  start_server "${SERVER_FLAGS[@]}"  # creates the schema
  seed
  print_machine
  main_runs
  [[ $SWEEP -eq 0 ]] || sweep
}

# Sourced (bench/load/compare.sh uses the functions above), it runs nothing.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
