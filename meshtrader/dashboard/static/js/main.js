// The page: a header of figures, a view per tab, and one live stream feeding them all. /api/state is
// read on connect (the stream's snapshot) and every few seconds; the stream brings fills, candles,
// health changes, risk states, forks and highlights as they happen.
import * as ask from "./ask.js";
import {$, Stream, act, coalesce, fmt, getJSON, money} from "./core.js";
import * as forks from "./forks.js";
import * as market from "./market.js";
import * as narratives from "./narratives.js";
import * as risk from "./risk.js";
import * as services from "./services.js";
import * as strategies from "./strategies.js";
import * as trading from "./trading.js";

const views = {trading, strategies, forks, market, services, risk, narratives, ask};
const STATE_EVERY_MS = 2000, VIEW_EVERY_MS = 5000;
let current = "trading";

function banner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

function header(s) {
  $("mode").textContent = s.mode;
  $("mode").className = "badge " + (s.mode === "live" ? "HALTED" : "");
  if (s.mode === "live") $("modenote").textContent = "LIVE trading: orders go to the exchange with real money.";
  drawTrading(s, s.risk_rev);
  $("equity").innerHTML = money(s.equity).replace(/class="(ok|bad)"/, "");
  $("cash").innerHTML = money(s.cash).replace(/class="(ok|bad)"/, "");
  $("exposure").textContent = s.exposure === null || s.exposure === undefined ? "-" : fmt(s.exposure);
  $("pnl").innerHTML = money(s.pnl); $("pnltoday").innerHTML = money(s.pnl_today);
  $("trades").textContent = s.trades;
  $("clock").textContent = s.event_time ? new Date(s.event_time).toISOString().replace("T", " ").slice(0, 16) : "-";
  $("regime").textContent = (s.regime || "-").replaceAll("_", " ");
  const mesh = s.mesh;
  banner(mesh && !mesh.up ? `The mesh is down: ${mesh.running} of ${mesh.services} services running` +
    `${mesh.redis ? "" : ", Redis not answering"}. Figures below are the last ones recorded; start it with ` +
    "`make run` (or `mesh up`)." : "");
}

/** The trading state's badge and the switches, from /api/state or the stream's risk state, unless older than
 * the one drawn: a poll answered from the hot state (written a flush later) can land after the stream's newer
 * state, and a button that showed the old state would then undo the operator's last click. */
function drawTrading(s, rev) {
  if (!risk.fresh(rev)) return;
  $("trading").textContent = s.trading_state + (s.kill_switch ? " (kill switch)" : s.paused ? " (paused)" : "");
  $("trading").className = "badge " + s.trading_state;
  $("trading").title = (s.risk_reason ?? s.reason) || "trading state";  // a state's, or a stream's risk state's
  risk.drawSwitches(s.kill_switch, s.paused);
}

function drawState(s) {
  header(s);
  for (const view of Object.values(views)) if (view.draw) view.draw(s);
}

async function refreshState() {
  try {
    drawState(await getJSON("/api/state"));
  } catch (e) {
    banner("The dashboard is not answering; retrying. (Is the mesh running? `mesh status` tells.)");
  }
}

function show(name) {
  current = views[name] ? name : "trading";
  for (const key of Object.keys(views)) $("view-" + key).hidden = key !== current;
  for (const a of $("tabs").children) a.classList.toggle("on", a.getAttribute("href") === "#" + current);
  if (views[current].refresh) views[current].refresh();
}
window.addEventListener("hashchange", () => show(location.hash.slice(1)));

// The live stream
const stream = new Stream();
stream.onSnapshot = drawState;
stream.onStatus = (up, seq) => {
  $("live").className = "live " + (up ? "on" : "off");
  $("live").textContent = up ? `live · #${seq}` : "reconnecting…";
};
const afterFill = coalesce(() => { refreshState(); trading.loadTrades(); }, 300);
stream.on("fill", afterFill);
stream.on("md.candle.", trading.onCandle);
stream.on("health", services.onHealth);
stream.on("risk.state", (e) => drawTrading(e, e.rev));
stream.on("narr", narratives.onHighlight);
stream.on("fork.", coalesce(() => current === "forks" && forks.refresh(), 500));
stream.on("", services.onEvent);

for (const [id, optimize] of [["validate", false], ["optimize", true]]) {
  $(id).onclick = () => confirm(optimize ? "Validate every strategy on a fork now, then optimise their parameters?"
                                         : "Validate every strategy on a fork now (it may reallocate capital)?")
    && act("/api/validate", {optimize});
}

show(location.hash.slice(1) || "trading");
refreshState();
stream.connect();
setInterval(refreshState, STATE_EVERY_MS);
setInterval(() => views[current].refresh && views[current].refresh(), VIEW_EVERY_MS);
