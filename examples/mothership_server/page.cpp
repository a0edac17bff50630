#include "page.h"

namespace mothership {
namespace {

// A workspace's chats as tiles, refreshed every 1.5 s. A tile whose chat has an active stream is
// yellow and says "generating…" (data-state="active"); the others are idle (data-state="idle").
// The token and workspace id can be prefilled from the URL fragment: #token=...&workspaceId=...
// (a fragment never reaches the server, so the token stays out of every log).
constexpr std::string_view kPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mothership chats</title>
<style>
  :root { --ink: #1d2330; --muted: #6b7385; --line: #dde1ea; --bg: #f5f6fa; --active: #ffd84d; --active-bg: #fff7cc; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--bg); }
  header { padding: 18px 28px; background: #1d2330; color: #fff; display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
  header h1 { font-size: 19px; margin: 0; font-weight: 650; letter-spacing: .2px; }
  header p { margin: 0; color: #aab2c5; font-size: 13px; }
  form { display: flex; gap: 10px; flex-wrap: wrap; padding: 16px 28px; background: #fff; border-bottom: 1px solid var(--line); }
  label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 4px; }
  input { font: inherit; padding: 7px 10px; border: 1px solid var(--line); border-radius: 7px; min-width: 260px; }
  button { font: inherit; align-self: flex-end; padding: 7px 16px; border: 0; border-radius: 7px; background: #3656d6; color: #fff; cursor: pointer; }
  #status { padding: 12px 28px 0; color: var(--muted); font-size: 13px; min-height: 1.5em; }
  #status.error { color: #b3261e; }
  #tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 14px; padding: 16px 28px 28px; }
  .tile { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 14px 16px; min-height: 112px;
          display: flex; flex-direction: column; gap: 6px; transition: background .3s, border-color .3s, box-shadow .3s; }
  .tile h2 { font-size: 15px; margin: 0; font-weight: 600; overflow-wrap: anywhere; }
  .tile .meta { font-size: 12px; color: var(--muted); margin-top: auto; }
  .badge { align-self: flex-start; font-size: 12px; padding: 2px 9px; border-radius: 999px; background: #eef0f5; color: var(--muted); }
  .tile.active { background: var(--active-bg); border-color: var(--active); box-shadow: 0 0 0 3px rgba(255, 216, 77, .35); }
  .tile.active .badge { background: var(--active); color: #4a3b00; animation: pulse 1.2s ease-in-out infinite; }
  .pin { color: #3656d6; font-size: 12px; }
  .empty { color: var(--muted); grid-column: 1 / -1; }
  @keyframes pulse { 50% { opacity: .55; } }
</style>
</head>
<body>
<header>
  <h1>Mothership chats</h1>
  <p>Yellow tiles are generating a reply right now. The page refreshes itself every 1.5 seconds.</p>
</header>
<form id="watch" autocomplete="off">
  <label>Bearer token <input id="token" type="password" placeholder="demo_..." required></label>
  <label>Workspace id <input id="workspace" placeholder="demo-workspace" required></label>
  <button type="submit">Watch</button>
</form>
<div id="status">Enter a token and a workspace id.</div>
<main id="tiles"></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let timer = null;

function prefill() {
  const fromHash = new URLSearchParams(location.hash.slice(1));
  const fromQuery = new URLSearchParams(location.search);
  const pick = (key) => fromHash.get(key) || fromQuery.get(key) || "";
  $("token").value = pick("token");
  $("workspace").value = pick("workspaceId") || pick("workspace");
}

function showStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
  return Math.floor(seconds / 86400) + " d ago";
}

function tile(chat) {
  const active = chat.activeStreamId !== null && chat.activeStreamId !== undefined;
  const el = document.createElement("article");
  el.className = "tile " + (active ? "active" : "idle");
  el.dataset.state = active ? "active" : "idle";
  el.dataset.chatId = chat.id;
  const title = document.createElement("h2");
  title.textContent = chat.title || "Untitled chat";
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = active ? "generating\u2026" : "idle";
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = "updated " + ago(chat.updatedAt);
  if (chat.pinned) {
    const pin = document.createElement("span");
    pin.className = "pin";
    pin.textContent = " \u00b7 pinned";
    meta.appendChild(pin);
  }
  el.append(title, badge, meta);
  return el;
}

function render(chats) {
  const tiles = $("tiles");
  if (chats.length === 0) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = "No chats in this workspace.";
    tiles.replaceChildren(empty);
    return;
  }
  tiles.replaceChildren(...chats.map(tile));
}

async function refresh() {
  clearTimeout(timer);
  const token = $("token").value.trim();
  const workspace = $("workspace").value.trim();
  if (token && workspace) {
    try {
      const response = await fetch("/api/mothership/chats?workspaceId=" + encodeURIComponent(workspace),
                                   { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      const body = await response.json();
      if (response.ok) {
        render(body.data);
        const generating = body.data.filter((c) => c.activeStreamId !== null).length;
        showStatus(body.data.length + " chats \u00b7 " + generating + " generating \u00b7 checked " +
                   new Date().toLocaleTimeString(), false);
      } else {
        $("tiles").replaceChildren();
        showStatus((body.error || "Request failed") + " (HTTP " + response.status + ")", true);
      }
    } catch (error) {
      showStatus("The server does not answer; retrying\u2026", true);
    }
  }
  timer = setTimeout(refresh, 1500);
}

$("watch").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
prefill();
refresh();
</script>
</body>
</html>
)HTML";

}  // namespace

std::string_view tilePage() noexcept { return kPage; }

}  // namespace mothership
