// Strategies: allocation over time, P&L, trades, win rate, Sharpe, drawdown, whether each may trade and
// why not; the parameters in use and when they were adopted; live beside the latest validation backtest.
import {$, chartTheme, esc, fmt, getJSON, money, num, palette, pct, row, wallclock, when} from "./core.js";

const LW = LightweightCharts;
const allocChart = LW.createChart($("allocchart"), chartTheme);
const allocLines = {};
let accounts = {}, allocations = {};

export function draw(s) {
  accounts = Object.fromEntries(s.accounts.map((a) => [a.strategy, a]));
  allocations = s.allocations;
}

export async function refresh() {
  let answer;
  try { answer = await getJSON("/api/strategies"); } catch (e) { return; }
  const rows = Object.entries(answer.strategies);
  $("strategytable").innerHTML = row(["strategy", num("allocation"), num("P&L"), num("realized"), num("fees"),
    num("trades"), num("win rate"), num("Sharpe"), num("max drawdown"), "trading"], "th") +
    rows.map(([name, s]) => {
      const a = accounts[name] || {};
      const trading = a.active === false ? `<span class="bad">deactivated</span> <span class="note">${esc(a.deactivated_because)}</span>`
        : '<span class="ok">active</span>';
      return row([esc(name), num(pct(allocations[name], 2)), num(money(a.pnl)), num(money(s.realized_pnl)),
        num(money(s.fees)), num(`${s.trades} <span class="note">(${s.closed_trades} closed)</span>`),
        num(s.win_rate === null ? "-" : pct(s.win_rate * 100)), num(fmt(s.sharpe)),
        num(s.max_drawdown_pct === null ? "-" : pct(s.max_drawdown_pct)), {html: trading, cls: "wrap"}]);
    }).join("");
  rows.forEach(([name, s], i) => {
    if (!allocLines[name]) allocLines[name] = allocChart.addSeries(LW.LineSeries, {color: palette[i % palette.length],
                                                                                    lineWidth: 2, title: name});
    // the first decision may come before the allocator saw a candle (market time 0): drawn at the next one
    const timed = s.allocation_history.filter((p) => p.time > 0);
    const points = new Map(timed.map((p) => [Math.floor(p.time / 1000), p.weight_pct]));
    allocLines[name].setData([...points].map(([time, value]) => ({time, value})));
  });
  allocChart.timeScale().fitContent();
  $("allocnote").textContent = `${Math.max(0, ...rows.map(([, s]) => s.allocation_history.length))} decisions`;
  $("validation").innerHTML = row(["strategy", "window (market time)", "fork", num("backtest return"),
    num("backtest trades"), num("backtest Sharpe"), num("live return"), num("live trades")], "th") +
    rows.map(([name, s]) => {
      const v = s.validation;
      if (!v) return row([esc(name), '<span class="note">no validation yet</span>', "", "", "", "", "", ""]);
      return row([esc(name), `${when(v.from_et)} → ${when(v.to_et)}`, esc(v.fork_id), num(pct(v.backtest.return_pct, 2)),
        num(v.backtest.trades ?? "-"),
        num(`${v.backtest.sharpe === null ? "n/a" : fmt(v.backtest.sharpe)} <span class="note">(${v.backtest.days ?? "?"} days)</span>`),
        num(pct(v.live.return_pct, 2)),
        num(v.live.trades ?? "-")]);
    }).join("");
  $("params").innerHTML = row(["strategy", "parameters", "source", "adopted"], "th") +
    rows.map(([name, s]) => row([esc(name), {html: esc(JSON.stringify(s.params)), cls: "wrap"}, esc(s.params_source),
      s.params_adopted_at ? wallclock(s.params_adopted_at) : "-"])).join("");
}
