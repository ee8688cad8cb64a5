// Services: a card per service (green running with fresh heartbeats, yellow starting or just restarted,
// red otherwise) with uptime, messages per second, decode errors, gaps, restarts and the last error; a
// click opens its recent log lines, filterable by level, text and trace id. Below, the live event stream.
import {$, ago, esc, fmt, getJSON, wallclock, when} from "./core.js";

const RECENT_RESTART_S = 60;
let services = {};  // name -> its latest health (from /api/state and the stream's health events)
let details = {};  // name -> counters, restarts and last error (GET /api/services)
let rates = {};  // name -> {in, out} messages per second between the last two looks
let before = null;
const restartedAt = {};  // name -> when the page saw a new process (ms)
const pids = {};  // name -> the last process seen (kept while a stopped service has none)
let chosen = null;

function colour(name, s) {
  const justRestarted = restartedAt[name] && Date.now() - restartedAt[name] < RECENT_RESTART_S * 1000;
  const starting = ["STARTING", "BACKOFF"].includes(s.state) || (s.up_s !== null && s.up_s !== undefined && s.up_s < 10);
  if (s.healthy && !starting && !justRestarted) return ["ok", s.state];
  if (starting || (justRestarted && s.healthy)) return ["warn", starting ? "STARTING" : "RESTARTED"];
  return ["bad", s.state === "RUNNING" ? "RUNNING (no heartbeat)" : s.state];
}

function card(name) {
  const s = services[name], d = details[name] || {}, r = rates[name] || {};
  const [cls, label] = colour(name, s);
  const error = d.last_error ? `<div class="err" title="${esc(wallclock(d.last_error.ts))}">last error: ` +
    `${esc(d.last_error.event)} ${esc((d.last_error.message || "").slice(0, 140))}</div>` : "";
  return `<div class="card ${cls}${chosen === name ? " chosen" : ""}" data-service="${esc(name)}">
    <h3><span>${esc(name)}</span><span class="${cls}">${esc(label)}</span></h3>
    <dl><dt>up</dt><dd>${ago(s.up_s)}</dd>
    <dt>heartbeat</dt><dd>${s.heartbeat_age_s === null || s.heartbeat_age_s === undefined ? "-" : s.heartbeat_age_s.toFixed(1) + " s ago"}</dd>
    <dt>msgs/s in · out</dt><dd>${r.in ?? "-"} · ${r.out ?? "-"}</dd>
    <dt>decode errors · gaps</dt><dd>${d.decode_errors ?? "-"} · ${d.sequence_gaps ?? "-"}</dd>
    <dt>restarts</dt><dd>${d.restarts ?? "-"}${restartedAt[name] ? ` (seen ${ago((Date.now() - restartedAt[name]) / 1000)} ago)` : ""}</dd>
    <dt>pid</dt><dd>${s.pid ?? "-"}</dd></dl>${error}</div>`;
}

function drawGrid() {
  $("servicegrid").innerHTML = Object.keys(services).map(card).join("");
  for (const el of $("servicegrid").children) el.onclick = () => openLog(el.dataset.service);
}

export function draw(state) {
  for (const [name, s] of Object.entries(state.services)) {
    if (s.pid && pids[name] && pids[name] !== s.pid) restartedAt[name] = Date.now();
    if (s.pid) pids[name] = s.pid;
    services[name] = s;
  }
  drawGrid();
}

/** A health change from the stream (a state, a heartbeat gone stale, a new process): drawn at once. */
export function onHealth(changed) {
  for (const [name, s] of Object.entries(changed)) {
    if (s.restarted) restartedAt[name] = Date.now();
    if (s.pid) pids[name] = s.pid;
    services[name] = {...services[name], ...s};
  }
  drawGrid();
}

export async function refresh() {
  let answer;
  try { answer = await getJSON("/api/services"); } catch (e) { return; }
  const now = performance.now() / 1000;
  rates = {};
  for (const [name, d] of Object.entries(answer)) {
    const was = before && before.details[name];
    // a restarted service counts from zero again: no rate until two looks at the same process
    const rate = (key) => d[key] >= was[key] ? fmt((d[key] - was[key]) / (now - before.now), 1) : "-";
    if (was) rates[name] = {in: rate("messages_in"), out: rate("messages_out")};
  }
  before = {now, details: answer};
  details = answer;
  drawGrid();
  if (chosen) loadLog();
}

function openLog(name) {
  chosen = name;
  $("logpanel").hidden = false;
  $("logservice").textContent = name;
  drawGrid();
  loadLog();
}

async function loadLog() {
  const query = new URLSearchParams({service: chosen, limit: "300"});
  for (const [key, id] of [["level", "loglevel"], ["contains", "logfilter"], ["trace_id", "logtrace"]])
    if ($(id).value) query.set(key, $(id).value);
  let answer;
  try { answer = await getJSON("/api/logs?" + query); } catch (e) { $("lognote").textContent = e.message; return; }
  $("lognote").textContent = `${answer.lines.length} lines, newest first`;
  $("loglines").innerHTML = answer.lines.map((l) => {
    const {ts, level, event, trace_id: trace, service, message, ...rest} = l;
    const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    return `<div class="${esc(level)}">${esc(ts ? wallclock(ts) : "")} ${esc(level)} ${esc(event || message || "")}` +
      `${trace ? " [" + esc(trace) + "]" : ""} ${esc(fields)}</div>`;
  }).join("");
}
for (const id of ["loglevel", "logfilter", "logtrace"]) $(id).addEventListener("change", () => chosen && loadLog());

/** Every relayed event but market data and account snapshots, newest on top. */
export function onEvent(event, topic) {
  if (topic.startsWith("md.") || topic === "acct" || topic === "health") return;
  const text = event.title ? `${event.title}: ${event.body}` :
    event.trade_id ? `${event.strategy} ${event.side} ${event.qty} ${event.symbol} @ ${event.price}` :
    event.reason !== undefined ? `${event.status || event.trading_state || (event.approved ? "approved" : "refused")} ${event.reason}` :
    JSON.stringify(event).slice(0, 160);
  const line = document.createElement("div");
  line.textContent = `${when(event.et)}  ${topic}  ${text}`;
  $("events").prepend(line);
  while ($("events").childNodes.length > 300) $("events").lastChild.remove();
}
