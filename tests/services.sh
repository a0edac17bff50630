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
#
# Topologies (issue 11), each on free loopback ports, each stopped by the exit trap below:
# start_redis_cluster DIR [NODE-TIMEOUT-MS]: six cluster-enabled redis-servers (3 masters, 3
#   replicas, `redis-cli --cluster create`), returning once every node says cluster_state:ok, knows
#   the six, and every replica's link is up. Sets CLUSTER_PIDS and CLUSTER_PORTS (arrays),
#   CLUSTER_NODES (127.0.0.1:P1,...) and CLUSTER_URL (redis-cluster://127.0.0.1:P1,...). Its
#   halves, to overlap the wait with other work: spawn_redis_cluster DIR [NODE-TIMEOUT-MS] starts
#   the nodes and sets the variables; form_redis_cluster joins them, waits, and sets nothing, so it
#   may run in a background subshell (`form_redis_cluster & ...; wait $!`).
# start_redis_sentinel DIR NAME [REPLICAS]: a master, REPLICAS (2) replicas and three
#   redis-sentinels (quorum 2, down-after-milliseconds 1000, failover-timeout 5000, writable config
#   files), returning once every sentinel monitors NAME with all the replicas and the two other
#   sentinels. Sets SENTINEL_PIDS and SENTINEL_PORTS (the sentinels), SENTINEL_SERVER_PIDS (master
#   and replicas), SENTINEL_MASTER_PORT, SENTINEL_REPLICA_PORTS (array), SENTINEL_NAME and
#   SENTINEL_URL (redis-sentinel://127.0.0.1:S1,...?master=NAME). Halves: spawn_redis_sentinel
#   DIR NAME [REPLICAS] and await_redis_sentinel (sets nothing).
# start_postgres_standby DIR: a streaming standby of start_postgres's cluster (pg_basebackup -R
#   -X stream -c fast --no-sync; initdb's pg_hba.conf already trusts replication from 127.0.0.1
#   and wal_level is replica by default) on another port, returning once it streams. Sets
#   PG_STANDBY_DATA, PG_STANDBY_PORT, PG_STANDBY_LOG.
# Callers must call stop_services_on_exit before any of these (it empties their pid arrays).

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

# ---- Topologies: Redis Cluster, Sentinel, a PostgreSQL standby (issue 11) ----

# launch_redis DIR COMMAND...: COMMAND (redis-server ARGS, or redis-sentinel CONFIG) on a free
# loopback port with its files in DIR, retried on port races; waits until it answers PING. Sets
# LAUNCHED_PID and LAUNCHED_PORT; logs only failures. Returns 1 after five failed attempts.
launch_redis() {
  local dir=$1 attempt port poll
  shift
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    "$@" --port "$port" --bind 127.0.0.1 --dir "$dir" --logfile "$dir/redis.log" --daemonize no \
      </dev/null >>"$dir/redis.out" 2>&1 &
    LAUNCHED_PID=$!
    # Polled every 20 ms for up to 20 s (a server answers within tens of milliseconds; a dozen of
    # them start one after the other).
    for ((poll = 0; poll < 1000; poll++)); do
      if redis_answers "$port"; then
        LAUNCHED_PORT=$port
        return 0
      fi
      kill -0 "$LAUNCHED_PID" 2>/dev/null || break
      sleep 0.02
    done
    kill -9 "$LAUNCHED_PID" 2>/dev/null || true
    wait "$LAUNCHED_PID" 2>/dev/null || true
    services_log "$1 did not start on port $port in $dir (attempt $attempt):"
    tail -n 5 "$dir/redis.log" >&2 || true
  done
  return 1
}

# kill_pids PID...: SIGKILLs these throwaway processes (nothing of theirs is worth a clean
# shutdown, and a master's SIGTERM may wait for lagging replicas) and reaps our children.
kill_pids() {
  local pid
  for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# Ends the background helpers (form_redis_cluster, await_redis_sentinel) still running at exit.
stop_service_helpers() {
  [[ ${#SERVICES_HELPER_PIDS[@]} -eq 0 ]] || kill_pids "${SERVICES_HELPER_PIDS[@]}"
  SERVICES_HELPER_PIDS=()
}

# spawn_redis_cluster DIR [NODE-TIMEOUT-MS]: the six nodes of start_redis_cluster, not yet joined.
spawn_redis_cluster() {
  local dir=$1 timeout=${2:-5000} i
  CLUSTER_DIR=$dir
  CLUSTER_PIDS=() CLUSTER_PORTS=()
  for i in 0 1 2 3 4 5; do
    launch_redis "$dir/node-$i" redis-server --save '' --appendonly no --enable-debug-command local \
      --repl-diskless-sync-delay 0 --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout "$timeout" ||
      services_die "could not start redis-server node $i of the cluster"
    CLUSTER_PIDS+=("$LAUNCHED_PID")
    CLUSTER_PORTS+=("$LAUNCHED_PORT")
  done
  CLUSTER_NODES=$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}")
  CLUSTER_NODES=${CLUSTER_NODES%,}
  # shellcheck disable=SC2034  # for the caller
  CLUSTER_URL="redis-cluster://$CLUSTER_NODES"
}

# cluster_node_ready PORT COUNT: the node is ok, knows COUNT nodes and, as a replica, is linked.
cluster_node_ready() {
  local info
  info=$(redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null) || return 1
  [[ $info == *cluster_state:ok* && $info == *"cluster_known_nodes:$2"* ]] || return 1
  info=$(redis-cli -h 127.0.0.1 -p "$1" info replication 2>/dev/null) || return 1
  [[ $info == *role:master* || $info == *master_link_status:up* ]]
}

# form_redis_cluster: joins the nodes of spawn_redis_cluster (3 masters, 3 replicas) and waits
# until every node is ready (30 s at most). Sets no variable: may run in a background subshell.
form_redis_cluster() {
  local nodes=() port
  for port in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  if ! redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      </dev/null >"$CLUSTER_DIR/create.log" 2>&1; then
    tail -n 20 "$CLUSTER_DIR/create.log" >&2
    services_log "redis-cli --cluster create failed"
    return 1
  fi
  for port in "${CLUSTER_PORTS[@]}"; do
    wait_until -t 30 "" cluster_node_ready "$port" "${#CLUSTER_PORTS[@]}" || {
      services_log "cluster node 127.0.0.1:$port is not ready after 30 s:"
      redis-cli -h 127.0.0.1 -p "$port" cluster info >&2 || true
      return 1
    }
  done
}

start_redis_cluster() {
  local start=$SECONDS
  spawn_redis_cluster "$@"
  form_redis_cluster || services_die "could not form the Redis Cluster"
  services_log "Redis Cluster (3 masters, 3 replicas) on $CLUSTER_NODES, up in $((SECONDS - start)) s"
}

stop_redis_cluster() {
  [[ ${#CLUSTER_PIDS[@]} -eq 0 ]] || kill_pids "${CLUSTER_PIDS[@]}"
  CLUSTER_PIDS=()
}

# spawn_redis_sentinel DIR NAME [REPLICAS]: the servers and sentinels of start_redis_sentinel,
# started but not awaited.
spawn_redis_sentinel() {
  local dir=$1 name=$2 replicas=${3:-2} i conf
  SENTINEL_NAME=$name
  SENTINEL_PIDS=() SENTINEL_PORTS=() SENTINEL_SERVER_PIDS=() SENTINEL_REPLICA_PORTS=()
  # A replica's first sync starts at once (7.0 waits 5 s for more replicas by default).
  local server=(redis-server --save '' --appendonly no --enable-debug-command local --repl-diskless-sync-delay 0)
  launch_redis "$dir/master" "${server[@]}" || services_die "could not start the sentinel setup's master"
  SENTINEL_SERVER_PIDS+=("$LAUNCHED_PID")
  SENTINEL_MASTER_PORT=$LAUNCHED_PORT
  for ((i = 1; i <= replicas; i++)); do
    launch_redis "$dir/replica-$i" "${server[@]}" --replicaof 127.0.0.1 "$SENTINEL_MASTER_PORT" ||
      services_die "could not start replica $i of the sentinel setup"
    SENTINEL_SERVER_PIDS+=("$LAUNCHED_PID")
    SENTINEL_REPLICA_PORTS+=("$LAUNCHED_PORT")
  done
  for i in 1 2 3; do
    mkdir -p "$dir/sentinel-$i"
    conf=$dir/sentinel-$i/sentinel.conf  # sentinel rewrites it: writable, one per sentinel
    printf '%s\n' "sentinel monitor $name 127.0.0.1 $SENTINEL_MASTER_PORT 2" \
      "sentinel down-after-milliseconds $name 1000" "sentinel failover-timeout $name 5000" \
      "sentinel parallel-syncs $name 1" >"$conf"
    launch_redis "$dir/sentinel-$i" redis-sentinel "$conf" || services_die "could not start sentinel $i"
    SENTINEL_PIDS+=("$LAUNCHED_PID")
    SENTINEL_PORTS+=("$LAUNCHED_PORT")
  done
  SENTINEL_URL="redis-sentinel://$(printf '127.0.0.1:%s,' "${SENTINEL_PORTS[@]}")"
  # shellcheck disable=SC2034  # for the caller
  SENTINEL_URL="${SENTINEL_URL%,}?master=$name"
}

# sentinel_master_field PORT NAME FIELD: FIELD of `SENTINEL MASTER NAME` on the sentinel on PORT.
sentinel_master_field() {
  redis-cli -h 127.0.0.1 -p "$1" sentinel master "$2" 2>/dev/null |
    awk -v field="$3" 'take { print; exit } $0 == field { take = 1 }'
}

# sentinel_ready PORT NAME REPLICAS: that sentinel monitors NAME as an up master with REPLICAS
# replicas and the two other sentinels.
sentinel_ready() {
  [[ $(sentinel_master_field "$1" "$2" flags) = master &&
     $(sentinel_master_field "$1" "$2" num-slaves) = "$3" &&
     $(sentinel_master_field "$1" "$2" num-other-sentinels) = 2 ]]
}

# Succeeds when the Redis on PORT is a replica whose master link is up.
replica_linked() {
  [[ $(redis-cli -h 127.0.0.1 -p "$1" info replication 2>/dev/null) == *master_link_status:up* ]]
}

# await_redis_sentinel: waits (30 s at most) until the replicas are linked and every sentinel knows
# them and the other sentinels. Sets no variable: may run in a background subshell.
await_redis_sentinel() {
  local port
  for port in "${SENTINEL_REPLICA_PORTS[@]}"; do
    wait_until -t 30 "" replica_linked "$port" || { services_log "replica $port did not link"; return 1; }
  done
  for port in "${SENTINEL_PORTS[@]}"; do
    wait_until -t 30 "" sentinel_ready "$port" "$SENTINEL_NAME" "${#SENTINEL_REPLICA_PORTS[@]}" || {
      services_log "sentinel $port does not see the whole setup after 30 s:"
      redis-cli -h 127.0.0.1 -p "$port" sentinel master "$SENTINEL_NAME" >&2 || true
      return 1
    }
  done
}

start_redis_sentinel() {
  local start=$SECONDS
  spawn_redis_sentinel "$@"
  await_redis_sentinel || services_die "the sentinel setup did not come up"
  services_log "Sentinel setup '$SENTINEL_NAME': master 127.0.0.1:$SENTINEL_MASTER_PORT, replicas" \
    "${SENTINEL_REPLICA_PORTS[*]}, sentinels ${SENTINEL_PORTS[*]}, up in $((SECONDS - start)) s"
}

stop_redis_sentinel() {
  [[ ${#SENTINEL_PIDS[@]} -eq 0 ]] || kill_pids "${SENTINEL_PIDS[@]}"
  [[ ${#SENTINEL_SERVER_PIDS[@]} -eq 0 ]] || kill_pids "${SENTINEL_SERVER_PIDS[@]}"
  SENTINEL_PIDS=() SENTINEL_SERVER_PIDS=()
}

# postgres_query PORT SQL: the one value SQL answers on the PostgreSQL on 127.0.0.1:PORT.
postgres_query() {
  "$(pg_bindir)/psql" -X -A -t -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2" 2>/dev/null
}

# start_postgres_standby DIR: a streaming standby of start_postgres's cluster (see the top).
start_postgres_standby() {
  local dir=$1 bin attempt port start=$SECONDS
  bin=$(pg_bindir)
  [[ -n ${PG_PORT:-} ]] || services_die "start_postgres_standby needs start_postgres first"
  mkdir -p "$dir"
  [[ $EUID -ne 0 ]] || chown postgres: "$dir"
  PG_STANDBY_DATA=$dir/data
  PG_STANDBY_LOG=$dir/postgres.log
  # --no-sync: syncing the copy takes seconds and a throwaway standby needs no durability.
  if ! as_postgres "$bin/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$PG_STANDBY_DATA" \
      -R -X stream -c fast --no-sync --no-manifest >"$dir/basebackup.log" 2>&1; then
    PG_STANDBY_DATA=""
    cat "$dir/basebackup.log" >&2
    services_die "pg_basebackup failed"
  fi
  echo "unix_socket_directories = '$dir'" | as_postgres tee -a "$PG_STANDBY_DATA/postgresql.conf" >/dev/null
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    as_postgres sed -i "/^port = /d" "$PG_STANDBY_DATA/postgresql.conf"
    echo "port = $port" | as_postgres tee -a "$PG_STANDBY_DATA/postgresql.conf" >/dev/null
    if as_postgres "$bin/pg_ctl" -D "$PG_STANDBY_DATA" -w -t 60 -l "$PG_STANDBY_LOG" start >/dev/null &&
       wait_until -t 30 "" postgres_in_recovery "$port"; then
      if ! wait_until -t 30 "" postgres_streams_to "$PG_PORT"; then
        services_log "the standby on port $port does not stream from 127.0.0.1:$PG_PORT"
      else
        # shellcheck disable=SC2034  # for the caller
        PG_STANDBY_PORT=$port
        services_log "PostgreSQL standby of 127.0.0.1:$PG_PORT on 127.0.0.1:$port, streaming, in $((SECONDS - start)) s"
        return 0
      fi
    fi
    services_log "the standby did not start on port $port (attempt $attempt):"
    tail -n 5 "$PG_STANDBY_LOG" >&2 || true
    stop_postgres_standby_server
  done
  services_die "could not start the PostgreSQL standby"
}

# Succeeds when the PostgreSQL on PORT answers and is a standby.
postgres_in_recovery() { [[ $(postgres_query "$1" 'SELECT pg_is_in_recovery()') = t ]]; }

# Succeeds when the primary on PORT has a walsender streaming.
postgres_streams_to() {
  [[ $(postgres_query "$1" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") -ge 1 ]]
}

# Stops the standby's server (fast, else immediate) and keeps its data.
stop_postgres_standby_server() {
  [[ -n ${PG_STANDBY_DATA:-} && -f $PG_STANDBY_DATA/postmaster.pid ]] || return 0
  local pg_ctl
  pg_ctl=$(pg_bindir)/pg_ctl
  as_postgres "$pg_ctl" -D "$PG_STANDBY_DATA" -w -t 30 -m fast stop >/dev/null 2>&1 ||
    as_postgres "$pg_ctl" -D "$PG_STANDBY_DATA" -w -t 30 -m immediate stop >/dev/null 2>&1 || true
}

stop_postgres_standby() {
  stop_postgres_standby_server
  PG_STANDBY_DATA=""
}

# On exit (also after INT or TERM), runs the caller's own cleanup function if one is named, stops
# Redis, the cluster, the sentinel setup, the standby and PostgreSQL, removes RUN_DIR, logs the wall
# time since START_TIME, and keeps the exit status. Call once from the script's main, before
# starting anything.
stop_services_on_exit() {
  SERVICES_EXTRA_CLEANUP=${1:-}
  # Arrays never come from the environment; PG_STANDBY_DATA might.
  CLUSTER_PIDS=() SENTINEL_PIDS=() SENTINEL_SERVER_PIDS=() SERVICES_HELPER_PIDS=()
  PG_STANDBY_DATA=""
  trap services_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# The EXIT trap that stop_services_on_exit sets.
services_exit() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -z ${SERVICES_EXTRA_CLEANUP:-} ]] || "$SERVICES_EXTRA_CLEANUP"
  stop_service_helpers
  stop_redis
  stop_redis_cluster
  stop_redis_sentinel
  stop_postgres_standby
  stop_postgres
  [[ -z ${RUN_DIR:-} ]] || rm -rf "$RUN_DIR"
  [[ -z ${START_TIME:-} ]] || services_log "wall time $(($(date +%s) - START_TIME)) s, exit status $rc"
  exit "$rc"
}
