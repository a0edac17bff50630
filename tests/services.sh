# shellcheck shell=bash
# Shared by tests/run.sh, bench/run.sh, bench/load.sh and examples/demo.sh: missing Debian packages, and a
# throwaway redis-server and PostgreSQL cluster on free loopback ports. Source it (`source
# "$ROOT/tests/services.sh"`): it only defines functions, and works under set -euo pipefail.
# Messages go through the caller's `log` and `die` when it defines them, else to stderr.
#
# start_redis DIR [REDIS-SERVER ARGS...]: no persistence, files in DIR; sets REDIS_PID, REDIS_PORT.
# start_postgres DIR ["name = value"...]: a new cluster in DIR/data, superuser "postgres" with trust
#   auth, listening on 127.0.0.1 and a unix socket in DIR, fsync off, pg_stat_statements preloaded,
#   max_connections 200; the given postgresql.conf lines come after these, so they win. Sets
#   PG_DATA, PG_PORT, PG_LOG (the server log) and PG_CTL (pg_ctl -D DATA -w -t 60, as postgres
#   when root).
#   As root, the postgres user must be able to reach DIR (make a mktemp -d parent 755).
# Both take absolute directories and retry five times on port races, then die. The caller should
# set REDIS_PID="" and PG_DATA="" before its cleanup trap can run, so that stop_redis and
# stop_postgres never act on values inherited from the environment.

# Defines log, die and usage for a command-line script that sources this file: log and die put NAME
# (e.g. bench/load.sh) before each message, usage prints FILE's header comment (its lines from the
# second to `set -euo`, without the leading "# "). Call: use_script_messages NAME "${BASH_SOURCE[0]}".
use_script_messages() {
  SCRIPT_NAME=$1
  SCRIPT_FILE=$2
  log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
  die() { log "error: $*"; exit 1; }
  usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SCRIPT_FILE"; }
}

# Logs a line through the caller's log, else to stderr after the script's name.
services_log() {
  if declare -F log >/dev/null; then log "$@"; else printf '%s: %s\n' "${0##*/}" "$*" >&2; fi
}

# Fails through the caller's die, else logs "error: ..." and exits 1.
services_die() {
  if declare -F die >/dev/null; then die "$@"; fi
  services_log "error: $*"
  exit 1
}

# As root, runs a command as the postgres user (initdb and postgres refuse to run as root).
as_postgres() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Sets the array MISSING_PACKAGES to those of the given Debian packages that are not installed.
missing_debian_packages() {
  local pkg
  MISSING_PACKAGES=()
  for pkg in "$@"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) = installed ]] ||
      MISSING_PACKAGES+=("$pkg")
  done
}

# install_debian_packages [--quiet] PKG...: apt-get installs the missing ones (sudo unless root).
install_debian_packages() {
  local quiet=0 sudo=()
  if [[ ${1:-} = --quiet ]]; then quiet=1; shift; fi
  missing_debian_packages "$@"
  [[ ${#MISSING_PACKAGES[@]} -gt 0 ]] || return 0
  [[ $EUID -eq 0 ]] || sudo=(sudo)
  local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive
                 apt-get install -y --no-install-recommends)
  if ((quiet)); then
    "${sudo[@]}" apt-get update -qq
    "${install[@]}" -qq "${MISSING_PACKAGES[@]}" >/dev/null
  else
    services_log "installing ${MISSING_PACKAGES[*]}"
    "${sudo[@]}" apt-get update
    "${install[@]}" "${MISSING_PACKAGES[@]}"
  fi
}

# Prints a random free loopback port outside the ephemeral range (the starts retry lost races).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
  done
}

# wait_until [-t SECONDS] PID CMD...: polls CMD up to SECONDS (20) while PID (if not "") is alive.
wait_until() {
  local tenths=200 i
  if [[ $1 = -t ]]; then tenths=$(($2 * 10)); shift 2; fi
  local pid=$1
  shift
  for ((i = 0; i < tenths; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Succeeds when a Redis on 127.0.0.1:PORT answers PING.
redis_answers() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) = PONG ]]; }

# start_redis DIR [ARGS...]: a throwaway redis-server on a free loopback port (see the top).
start_redis() {
  local dir=$1 attempt port
  shift
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
      --dir "$dir" --logfile "$dir/redis.log" "$@" </dev/null >>"$dir/redis.out" 2>&1 &
    REDIS_PID=$!
    if wait_until "$REDIS_PID" redis_answers "$port"; then
      # shellcheck disable=SC2034  # for the caller
      REDIS_PORT=$port
      services_log "redis-server pid $REDIS_PID on 127.0.0.1:$port"
      return 0
    fi
    stop_redis
    services_log "redis-server did not start on port $port (attempt $attempt):"
    tail -n 5 "$dir/redis.log" >&2 || true
  done
  services_die "could not start redis-server"
}

# Stops the redis-server of start_redis (resuming it first, should it be paused) and reaps it.
stop_redis() {
  [[ -n ${REDIS_PID:-} ]] || return 0
  kill -CONT "$REDIS_PID" 2>/dev/null || true
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}

# Prints the bin directory of the newest PostgreSQL server installed (bookworm: 15).
pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -x $dir/initdb ]] || services_die "no PostgreSQL server under /usr/lib/postgresql"
  echo "$dir"
}

# start_postgres DIR [SETTINGS...]: initdb (as postgres when root) and start a cluster (see top).
start_postgres() {
  local dir=$1 bin attempt port
  shift
  bin=$(pg_bindir)
  mkdir -p "$dir"
  [[ $EUID -ne 0 ]] || chown postgres: "$dir"
  PG_DATA=$dir/data
  PG_LOG=$dir/postgres.log
  as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C \
    --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; services_die "initdb failed"; }
  # Durability is pointless for a throwaway cluster; tests/run.sh needs pg_stat_statements.
  {
    cat <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_stat_statements'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    [[ $# -eq 0 ]] || printf '%s\n' "$@"
  } | as_postgres tee -a "$PG_DATA/postgresql.conf" >/dev/null
  PG_CTL=("$bin/pg_ctl" -D "$PG_DATA" -w -t 60)
  [[ $EUID -ne 0 ]] || PG_CTL=(runuser -u postgres -- "${PG_CTL[@]}")
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    as_postgres sed -i "/^port = /d" "$PG_DATA/postgresql.conf"
    echo "port = $port" | as_postgres tee -a "$PG_DATA/postgresql.conf" >/dev/null
    if "${PG_CTL[@]}" -l "$PG_LOG" start >/dev/null &&
       wait_until "" "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
      # shellcheck disable=SC2034  # for the caller
      PG_PORT=$port
      services_log "PostgreSQL $(basename "$(dirname "$bin")") on 127.0.0.1:$port, data in $PG_DATA"
      return 0
    fi
    services_log "PostgreSQL did not start on port $port (attempt $attempt):"
    tail -n 5 "$PG_LOG" >&2 || true
    stop_postgres
  done
  services_die "could not start PostgreSQL"
}

# Stops the cluster of start_postgres (fast, else immediate); nothing when it is not running.
stop_postgres() {
  [[ -n ${PG_DATA:-} && -f $PG_DATA/postmaster.pid ]] || return 0
  local pg_ctl
  pg_ctl=$(pg_bindir)/pg_ctl
  as_postgres "$pg_ctl" -D "$PG_DATA" -w -t 30 -m fast stop >/dev/null 2>&1 ||
    as_postgres "$pg_ctl" -D "$PG_DATA" -w -t 30 -m immediate stop >/dev/null 2>&1 || true
}

# On exit (also after INT or TERM), runs the caller's own cleanup function if one is named, stops
# Redis and PostgreSQL, removes RUN_DIR, logs the wall time since START_TIME, and keeps the exit
# status. Call once from the script's main, before starting anything.
stop_services_on_exit() {
  SERVICES_EXTRA_CLEANUP=${1:-}
  trap services_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# The EXIT trap that stop_services_on_exit sets.
services_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -z ${SERVICES_EXTRA_CLEANUP:-} ]] || "$SERVICES_EXTRA_CLEANUP"
  stop_redis
  stop_postgres
  [[ -z ${RUN_DIR:-} ]] || rm -rf "$RUN_DIR"
  [[ -z ${START_TIME:-} ]] || services_log "wall time $(($(date +%s) - START_TIME)) s, exit status $rc"
  exit "$rc"
}
