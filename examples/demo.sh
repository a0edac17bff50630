#!/usr/bin/env bash
# The stuck "generating…" tile, and how streamlock un-sticks it, in one command.
#
#   examples/demo.sh            run the demo, then clean everything up
#   examples/demo.sh --keep     ...and keep the server running for you until Ctrl-C
#   examples/demo.sh --cluster  the same with the locks on a local Redis Cluster (6 nodes)
#
# It installs what is missing (Debian/Ubuntu, apt-get), builds into build-demo/, starts a
# throwaway Redis and PostgreSQL on free loopback ports, and tears them down on exit or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tests/services.sh
source "$ROOT/tests/services.sh"  # install_debian_packages, start_redis, start_postgres...
BUILD_DIR=${BUILD_DIR:-$ROOT/build-demo}
LOCK_TTL_S=4
KEEP=0
CLUSTER=0

for arg in "$@"; do
  case $arg in
    --keep) KEEP=1 ;;
    --cluster) CLUSTER=1 ;;
    -h | --help)
      sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "demo.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -t 1 ]]; then BOLD=$'\e[1m' DIM=$'\e[2m' YELLOW=$'\e[33m' GREEN=$'\e[32m' RESET=$'\e[0m'
else BOLD='' DIM='' YELLOW='' GREEN='' RESET=''; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
say() { printf '    %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }
log() { say "$DIM$*$RESET"; }  # what tests/services.sh reports: ports, pids, retries

# wait_for WHAT SECONDS CMD...: runs CMD until it succeeds, for at most SECONDS.
wait_for() {
  local what=$1 seconds=$2
  shift 2
  wait_until -t "$seconds" "" "$@" || die "timed out after ${seconds}s waiting for $what (logs in $WORK)"
}

# ---------------------------------------------------------------------------------------------
step "Checking the tools the demo needs"
PACKAGES=(build-essential cmake pkg-config libhiredis-dev libpq-dev libssl-dev libfmt-dev libcpp-httplib-dev
          nlohmann-json3-dev redis-server postgresql curl jq)
if command -v dpkg >/dev/null; then
  missing_debian_packages "${PACKAGES[@]}"
  if ((${#MISSING_PACKAGES[@]})); then
    say "Installing with apt-get: ${MISSING_PACKAGES[*]}"
    install_debian_packages --quiet "${MISSING_PACKAGES[@]}"
  else
    say "Everything is installed."
  fi
fi
for tool in cmake c++ redis-server redis-cli psql curl jq; do
  command -v "$tool" >/dev/null || die "$tool is missing; install it and run again"
done
pg_bindir >/dev/null  # dies when there is no PostgreSQL server

# ---------------------------------------------------------------------------------------------
step "Building the server and the stream worker into ${BUILD_DIR#"$ROOT"/}/"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSTREAMLOCK_BUILD_TESTS=OFF \
  -DSTREAMLOCK_BUILD_EXAMPLES=ON -DSTREAMLOCK_INSTALL=OFF >"$BUILD_DIR.log" 2>&1 ||
  { cat "$BUILD_DIR.log" >&2; die "cmake configure failed"; }
cmake --build "$BUILD_DIR" -j "$(nproc)" --target mothership_server stream_worker >>"$BUILD_DIR.log" 2>&1 ||
  { tail -n 40 "$BUILD_DIR.log" >&2; die "build failed"; }
rm -f "$BUILD_DIR.log"
SERVER=$BUILD_DIR/examples/mothership_server/mothership_server
WORKER=$BUILD_DIR/examples/stream_worker/stream_worker
say "Built $SERVER"

# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/streamlock-demo.XXXXXX)
chmod 755 "$WORK"
REDIS_PID='' PG_DATA='' SERVER_PID='' WORKER_PID=''
CLUSTER_PIDS=()

cleanup() {
  trap - EXIT INT TERM
  set +e
  printf '\n%sCleaning up: stopping the worker, the server, Redis and PostgreSQL.%s\n' "$DIM" "$RESET"
  [[ -n $WORKER_PID ]] && kill -KILL "$WORKER_PID" 2>/dev/null
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  fi
  stop_redis
  stop_redis_cluster
  stop_postgres
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ((CLUSTER)); then
  step "Starting a throwaway Redis Cluster (3 masters, 3 replicas)"
  start_redis_cluster "$WORK/cluster"
  REDIS_URL_DEMO=$CLUSTER_URL
  REDIS_CLI=(redis-cli -c -p "${CLUSTER_PORTS[0]}")
  say "The cluster holds the stream locks: each key copilot:chat-stream-lock:<chatId> in its own slot;"
  say "the server and the worker reach it with $REDIS_URL_DEMO."
else
  step "Starting a throwaway Redis"
  start_redis "$WORK/redis"
  REDIS_URL_DEMO="redis://127.0.0.1:$REDIS_PORT"
  REDIS_CLI=(redis-cli -p "$REDIS_PORT")
  say "Redis holds the stream locks: key copilot:chat-stream-lock:<chatId>, value = the stream's id."
fi

step "Starting a throwaway PostgreSQL"
start_postgres "$WORK/pg"
PSQL=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -q -P null=NULL)
"${PSQL[@]}" -c "CREATE DATABASE mothership"
DATABASE_URL_DEMO="postgresql://postgres@127.0.0.1:$PG_PORT/mothership"
say "PostgreSQL holds the chats; copilot_chats.conversation_id is the \"active stream\" marker."

# ---------------------------------------------------------------------------------------------
HTTP_PORT=$(free_port)
step "Starting mothership_server on http://127.0.0.1:$HTTP_PORT (lock TTL ${LOCK_TTL_S}s) with demo data"
"$SERVER" --listen "127.0.0.1:$HTTP_PORT" --database-url "$DATABASE_URL_DEMO" --redis-url "$REDIS_URL_DEMO" \
  --lock-ttl-s "$LOCK_TTL_S" --seed-demo >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
wait_for "the server to listen" 30 grep -q '^listening on' "$WORK/server.out"
TOKEN=$(sed -n 's/^demo token: //p' "$WORK/server.out")
WORKSPACE=$(sed -n 's/^demo workspace: //p' "$WORK/server.out")
CHAT=$(sed -n 's/^demo chat: //p' "$WORK/server.out" | head -n 1)
BASE="http://127.0.0.1:$HTTP_PORT"
PAGE_URL="$BASE/#token=$TOKEN&workspaceId=$WORKSPACE"
say "It created the demo schema and seeded a user, workspace \"$WORKSPACE\" and six chats."
say "Bearer token: $TOKEN"
say "Tile page:    ${BOLD}$PAGE_URL${RESET}"
say "(open it in a browser to watch the tiles while the demo runs)"

api() { curl -sS -H "Authorization: Bearer $TOKEN" "$BASE$1"; }
active_stream_id() { api "/api/mothership/chats/$CHAT" | jq -r '.chat.activeStreamId'; }
chat_is_active() { [[ $(active_stream_id) != null ]]; }
chat_is_inactive() { [[ $(active_stream_id) == null ]]; }
show_tiles() {
  api "/api/mothership/chats?workspaceId=$WORKSPACE" |
    jq -r '.data[] | "      \(if .activeStreamId then "[generating…]" else "[idle]       " end)  \(.title)"' |
    sed "s/\[generating…\]/${YELLOW}[generating…]${RESET}/"
}
show_marker() {
  "${PSQL[@]}" -d mothership -c \
    "SELECT title, conversation_id AS marker FROM copilot_chats WHERE id = '$CHAT'" | sed 's/^/      /'
}

# ---------------------------------------------------------------------------------------------
step "Starting a stream worker on \"$(api "/api/mothership/chats/$CHAT" | jq -r .chat.title)\""
say "It takes the Redis lock, writes the marker, and heartbeats the lock every $((LOCK_TTL_S * 1000 / 3)) ms while it \"generates\"."
"$WORKER" --chat-id "$CHAT" --duration-s 600 --lock-ttl-s "$LOCK_TTL_S" --database-url "$DATABASE_URL_DEMO" \
  --redis-url "$REDIS_URL_DEMO" >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
wait_for "the chat to show as generating" 20 chat_is_active
STREAM=$(active_stream_id)
say "GET /api/mothership/chats?workspaceId=$WORKSPACE now shows:"
show_tiles
say "The chat's activeStreamId is $STREAM."

# ---------------------------------------------------------------------------------------------
step "Killing the worker with SIGKILL, as an OOM kill or a deploy would"
kill -KILL "$WORKER_PID"
wait "$WORKER_PID" 2>/dev/null || true
WORKER_PID=''
say "It had no chance to clear its marker. In PostgreSQL the marker is still set:"
show_marker
say "Without streamlock, this chat would say \"generating…\" forever: the marker has no TTL."
say "Redis still holds the lock for at most ${LOCK_TTL_S}s more (nobody extends it now):"
say "  GET copilot:chat-stream-lock:$CHAT -> $("${REDIS_CLI[@]}" --raw GET "copilot:chat-stream-lock:$CHAT")"
say "Until it expires the endpoint still reports activeStreamId $(active_stream_id):"
say "a lock that is still alive cannot be told apart from a live stream."

# ---------------------------------------------------------------------------------------------
step "Waiting for the lock to expire; the server checks every marker against Redis on each read"
wait_for "the chat to show as idle" $((LOCK_TTL_S * 5)) chat_is_inactive
say "The lock is gone, so the marker is stale: the endpoint reports the chat idle:"
show_tiles
say "...and the read repaired the marker in PostgreSQL (compare-and-clear of the value it read):"
show_marker

# ---------------------------------------------------------------------------------------------
step "Done"
say "Metrics: $BASE/metrics    Health: $BASE/healthz"
grep -E '^streamlock_(lookups_total|markers_repaired_total)' <(curl -sS "$BASE/metrics") | sed 's/^/      /'
if ((KEEP)); then
  say ""
  say "The server keeps running. Open the tile page:"
  say "  ${BOLD}$PAGE_URL${RESET}"
  say "and start a stream in another terminal to see a tile turn yellow, e.g.:"
  say "  $WORKER --chat-id $CHAT --duration-s 20 --lock-ttl-s $LOCK_TTL_S \\"
  say "    --database-url $DATABASE_URL_DEMO --redis-url $REDIS_URL_DEMO"
  say "(add --crash-after-s 5 to leave a stuck marker behind and watch it clear)"
  say "Press Ctrl-C to stop everything and clean up."
  wait "$SERVER_PID" || true
  SERVER_PID=''
else
  say "Run examples/demo.sh --keep to keep the server up and watch the tile page yourself."
fi
