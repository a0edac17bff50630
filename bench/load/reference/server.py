#!/usr/bin/python3
"""The reference implementation of the demo's two read endpoints on a mainstream stack, for the
side-by-side load comparison (bench/load/compare.sh --config reference ...): Python's asyncio on
uvloop, aiohttp for HTTP, asyncpg for PostgreSQL (its pool, statements prepared and cached by the
driver) and redis-py's asyncio client for Redis, all from Debian's packages (python3-aiohttp,
python3-asyncpg, python3-uvloop, python3-redis). It is written the way a team on that stack would
write it, not tuned: one process, the drivers' default pool sizes.

Same work per request as mothership_server: the same SQL text (printed by bench/load/print_sql, so
the two cannot drift), one MGET of the marked chats' lock keys under the same 250 ms deadline, the
contract's reconciliation table (verified or unknown for the whole batch), and the compare-and-clear
repair of verified-stale markers before answering. No circuit breaker: a typical service has only
the timeout. Same command line as mothership_server for what the harness passes (--listen,
--database-url, --redis-url), plus --print-sql, and the same "listening on URL" line. /metrics
counts what the harness reads: requests per route and markers repaired.

Not part of the library or its tests: only the load comparison starts it.
"""

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

LOCK_PREFIX = "copilot:chat-stream-lock:"
LOOKUP_DEADLINE_S = 0.25
REPAIR_SQL = (
    "UPDATE copilot_chats AS chat SET conversation_id = NULL "
    "FROM unnest($1::text[], $2::text[]) AS stale(id, marker) "
    "WHERE chat.id = stale.id::uuid AND chat.conversation_id = stale.marker"
)
AUTH_SQL_SUFFIX = " SELECT EXISTS (SELECT 1 FROM caller) AS authenticated"
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

LIST_ROUTE = "/api/mothership/chats"
CHAT_ROUTE = "/api/mothership/chats/{chatId}"


def dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error(status, message):
    return web.Response(status=status, text=dumps({"error": message}), content_type="application/json")


def bearer(request):
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or len(header) <= 7:
        return None
    return header[7:]


class Server:
    def __init__(self, args):
        self.args = args
        self.list_sql = subprocess.run([args.print_sql, "list"], check=True, capture_output=True, text=True).stdout
        self.chat_sql = subprocess.run([args.print_sql, "chat"], check=True, capture_output=True, text=True).stdout
        # The caller CTE of the list statement, alone: authentication for requests of a bad form.
        caller, found, _ = self.list_sql.partition(",\naccess AS")
        if not found or not caller.startswith("WITH caller AS"):
            sys.exit("server.py: the list statement no longer starts with its caller CTE; update auth_sql")
        self.auth_sql = caller + AUTH_SQL_SUFFIX
        self.requests = {LIST_ROUTE: 0, CHAT_ROUTE: 0}
        self.repaired = 0
        self.pool = None
        self.redis = None

    async def start(self, app):
        self.pool = await asyncpg.create_pool(self.args.database_url)
        self.redis = aioredis.from_url(self.args.redis_url, socket_timeout=LOOKUP_DEADLINE_S)

    async def stop(self, app):
        await self.pool.close()
        await self.redis.close()

    # The owners of the chats' locks, or None (unknown) when Redis did not answer in time.
    async def owners(self, chat_ids):
        if not chat_ids:
            return {}
        try:
            values = await asyncio.wait_for(self.redis.mget([LOCK_PREFIX + c for c in chat_ids]), LOOKUP_DEADLINE_S)
        except Exception:  # timeout, connection refused or lost: the whole batch is unknown
            return None
        return {c: v.decode() for c, v in zip(chat_ids, values) if v}

    # The contract's table for (chat id, marker) pairs: {chat id: what to show}, after repairing the
    # verified-stale markers.
    async def reconcile(self, marked):
        owners = await self.owners([chat_id for chat_id, _ in marked])
        if owners is None:
            return {chat_id: marker for chat_id, marker in marked}  # unknown: the markers as stored
        stale = [(chat_id, marker) for chat_id, marker in marked if chat_id not in owners]
        if stale:
            try:
                status = await self.pool.execute(REPAIR_SQL, [c for c, _ in stale], [m for _, m in stale])
                self.repaired += int(status.split()[-1])
            except Exception as e:  # the answer stands; the next read repairs again
                print(f"repair failed: {e}", file=sys.stderr)
        return {chat_id: owners.get(chat_id) for chat_id, _ in marked}

    async def authenticated(self, token):
        return await self.pool.fetchval(self.auth_sql, token)

    async def list_chats(self, request):
        self.requests[LIST_ROUTE] += 1
        token = bearer(request)
        if token is None:
            return error(401, "Unauthorized")
        query = request.rel_url.query
        workspaces, scopes = query.getall("workspaceId", []), query.getall("scope", [])
        bad = len(workspaces) != 1 or not workspaces[0] or len(scopes) > 1 or (scopes and scopes[0] not in ("active", "archived"))
        try:
            if bad:
                if not await self.authenticated(token):
                    return error(401, "Unauthorized")
                return error(400, "workspaceId is required" if len(workspaces) != 1 or not workspaces[0] else "Invalid scope")
            archived = bool(scopes) and scopes[0] == "archived"
            rows = await self.pool.fetch(self.list_sql, token, workspaces[0], archived)
        except Exception as e:
            print(f"list failed: {e}", file=sys.stderr)
            return error(500, "Failed to fetch chats")
        if not rows[0]["authenticated"]:
            return error(401, "Unauthorized")
        if not rows[0]["allowed"]:
            return error(403, "Workspace access denied")
        chats = [row for row in rows if row["id"] is not None]
        shown = {}
        if not archived:
            shown = await self.reconcile([(row["id"], row["marker"]) for row in chats if row["marker"]])
        data = [
            {
                "id": row["id"],
                "title": row["title"],
                "updatedAt": row["updated_at"],
                "activeStreamId": shown.get(row["id"]),
                "lastSeenAt": row["last_seen_at"],
                "pinned": row["pinned"],
                "deletedAt": row["deleted_at"],
            }
            for row in chats
        ]
        return web.Response(text=dumps({"success": True, "data": data}), content_type="application/json")

    async def get_chat(self, request):
        self.requests[CHAT_ROUTE] += 1
        token = bearer(request)
        if token is None:
            return error(401, "Unauthorized")
        chat_id = request.match_info["chatId"]
        try:
            if not UUID.match(chat_id):
                if not await self.authenticated(token):
                    return error(401, "Unauthorized")
                return web.Response(status=404, text='{"success":false,"error":"Chat not found"}', content_type="application/json")
            row = await self.pool.fetchrow(self.chat_sql, token, chat_id)
        except Exception as e:
            print(f"chat failed: {e}", file=sys.stderr)
            return error(500, "Failed to fetch chat")
        if not row["authenticated"]:
            return error(401, "Unauthorized")
        if row["id"] is None:
            return web.Response(status=404, text='{"success":false,"error":"Chat not found"}', content_type="application/json")
        stream = None
        if row["marker"]:
            stream = (await self.reconcile([(row["id"], row["marker"])]))[row["id"]]
        # messages and resources are the stored JSON, spliced as they are.
        body = (
            '{"success":true,"chat":{"id":%s,"title":%s,"messages":%s,"activeStreamId":%s,"resources":%s,'
            '"createdAt":%s,"updatedAt":%s}}'
            % (
                dumps(row["id"]),
                dumps(row["title"]),
                row["messages"] or "null",
                dumps(stream),
                row["resources"] or "null",
                dumps(row["created_at"]),
                dumps(row["updated_at"]),
            )
        )
        return web.Response(text=body, content_type="application/json")

    async def metrics(self, request):
        lines = [f'mothership_http_requests_total{{route="{route}"}} {n}' for route, n in self.requests.items()]
        lines.append(f"streamlock_markers_repaired_total {self.repaired}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


async def serve(args):
    server = Server(args)
    app = web.Application()
    app.router.add_get(LIST_ROUTE, server.list_chats)
    app.router.add_get(CHAT_ROUTE, server.get_chat)
    app.router.add_get("/metrics", server.metrics)
    app.on_startup.append(server.start)
    app.on_cleanup.append(server.stop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = args.listen.rsplit(":", 1)
    site = web.TCPSite(runner, host, int(port))
    await site.start()
    bound = site._server.sockets[0].getsockname()
    print(f"listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--print-sql", required=True, help="bench/load/print_sql of a bench/load.sh build")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
