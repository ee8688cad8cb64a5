// Risk & controls: the trading state, pause/resume, the kill switch, close all; each limit with its use
// and its value (changeable at run time); the latest refusals; who used which control and when.
import {$, act, esc, fmt, getJSON, num, row, wallclock, when} from "./core.js";

let killOn = false, paused = false, limitValues = {}, riskRev = 0;

/** Whether a risk state (its RiskState.rev) is at least as new as the newest drawn; if so it becomes that.
 * A state without one (no risk guard has published since Redis started) is drawn as it is: UNKNOWN. */
export function fresh(rev) {
  if (!rev) return true;
  if (rev < riskRev) return false;
  riskRev = rev;
  return true;
}

/** The buttons say what a click will do: from the state, and at once from the stream's risk states. */
export function drawSwitches(kill, pause) {
  killOn = !!kill; paused = !!pause;
  $("kill").textContent = killOn ? "Release kill switch" : "Kill switch";
  $("pause").textContent = paused ? "Resume trading" : "Pause trading";
}

export function draw(s) {  // the switches are drawn with the header's badge (main.js drawTrading)
  $("riskreason").textContent = s.risk_reason || "";
  drawResets(s);
  $("limits").innerHTML = row(["limit", num("in use"), num("of"), ""], "th") + s.risk_limits.map((l) => {
    const count = l.limit === "entries today", share = Number(l.used) / Number(l.of);
    const show = (x) => count ? esc(x) : fmt(Number(x) * 100, 1) + " %";
    return row([esc(l.limit), num(show(l.used)), num(show(l.of)), `<meter min="0" max="1" low="0.5" high="0.8" ` +
                `optimum="0" value="${Math.min(share, 1)}"></meter>`]);
  }).join("");
  drawLimitValues(s.limit_values || {});
  $("rejections").innerHTML = row(["time", "strategy", "symbol", "side", "rule", "reason"], "th") +
    (s.rejections || []).slice(0, 12).map((r) => row([when(r.event_time), esc(r.strategy), esc(r.symbol), esc(r.side),
      esc(r.rule), {html: `<span class="note">${esc(r.reason)}</span>`, cls: "wrap"}])).join("");
}

/** The resets that apply now: the drawdown's peak always, today's loss while a daily halt holds, and each
 * strategy its drawdown deactivated. Live, they are made on the mesh's host (the API refuses them here). */
function drawResets(s) {
  const resets = s.mode === "live" ? [] : [["peak", "", "Reset drawdown peak"]];
  if (s.mode !== "live" && s.daily_halt) resets.push(["daily_loss", "", "Lift daily halt"]);
  for (const a of s.accounts || []) {
    if (s.mode !== "live" && a.active === false) resets.push(["strategy", a.strategy, `Reactivate ${a.strategy}`]);
  }
  const html = resets.map(([what, strategy, label]) =>
    `<button class="soft" data-reset="${what}" data-strategy="${esc(strategy)}">${esc(label)}</button>`).join("");
  if ($("resets").innerHTML !== html) $("resets").innerHTML = html;
}

const RESET_ASKS = {
  peak: () => "Measure the portfolio's drawdown afresh from the equity now? (After a drawdown halt, release the kill switch next.)",
  daily_loss: () => "Lift today's daily loss halt? The rest of the day's loss counts from the equity now.",
  strategy: (name) => `Reactivate ${name}? Its drawdown counts afresh from its next NAV.`,
};

$("resets").addEventListener("click", (e) => {
  const {reset, strategy} = e.target.dataset || {};
  if (!reset || !confirm(RESET_ASKS[reset](strategy))) return;
  act("/api/risk/reset", {what: reset, strategy: strategy || "", reason: "from the dashboard"}, refresh);
});

function drawLimitValues(values) {
  limitValues = values;
  $("limitvalues").innerHTML = row(["setting", num("value"), ""], "th") + Object.keys(values).map((name) =>
    row([esc(name), num(esc(values[name])), `<button class="soft" data-limit="${esc(name)}">change</button>`])).join("");
}

$("limitvalues").addEventListener("click", (e) => {
  const name = e.target.dataset && e.target.dataset.limit;
  if (!name) return;
  const value = prompt(`New value for ${name} (now ${limitValues[name]}):`, limitValues[name]);
  if (value === null || value === limitValues[name]) return;
  if (!confirm(`Change the risk limit ${name} from ${limitValues[name]} to ${value}?`)) return;
  act("/api/risk/limits", {name, value}, refresh);
});

export async function refresh() {
  let history;
  try { history = await getJSON("/api/controls?n=30"); } catch (e) { return; }
  $("controls").innerHTML = row(["at", "market time", "control", "by", "what"], "th") +
    history.controls.map((c) => row([wallclock(c.at), when(c.event_time), esc(c.control), esc(c.by),
      {html: esc(c.detail), cls: "wrap"}])).join("");
}

$("kill").onclick = () => {
  const on = !killOn;
  if (on && !confirm("Halt all trading now? No order of any kind is approved until the switch is released.")) return;
  if (!on && !confirm("Release the kill switch and let trading resume?")) return;
  act("/api/kill-switch", {on}, refresh);
};
$("pause").onclick = () => {
  const on = !paused;
  if (!confirm(on ? "Pause trading? Only orders that reduce exposure go through." : "Resume trading?")) return;
  act("/api/pause", {on}, refresh);
};
$("closeall").onclick = () => {
  if (!confirm("Close every open position at market now?")) return;
  act("/api/close-all", {confirm: true, reason: "dashboard button"}, refresh);
};
