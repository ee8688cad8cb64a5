// Trading: the market chart (candles, volume, each strategy's trades and overlays), the equity curves,
// positions with unrealized P&L, the strategies' accounts and the last trades.
import {$, chartTheme, coalesce, esc, fmt, getJSON, money, num, palette, pct, row, when} from "./core.js";

const LW = LightweightCharts;
const CANDLES = 1440;  // a day of 1-minute candles

const chart = LW.createChart($("chart"), chartTheme);
const candles = chart.addSeries(LW.CandlestickSeries, {upColor: "#a3be8c", downColor: "#bf616a", borderVisible: false,
                                                        wickUpColor: "#a3be8c", wickDownColor: "#bf616a"});
const volume = chart.addSeries(LW.HistogramSeries, {priceFormat: {type: "volume"}, priceScaleId: "", color: "#3b4252"});
volume.priceScale().applyOptions({scaleMargins: {top: 0.8, bottom: 0}});
const tradeMarks = LW.createSeriesMarkers(candles, []);
let overlays = {};  // feature name -> line series of the chosen strategy's price features
let symbol = null, timeframe = "1m", step = 60, firstBar = 0, lastBar = 0, trades = [];

const volumeBar = (c) => ({time: c.time, value: c.volume, color: c.close >= c.open ? "#2e4a3a" : "#4a2e33"});

function note() {
  const lines = Object.keys(overlays);
  $("chartnote").textContent = `${symbol}: ${Math.round((lastBar - firstBar) / step) + 1} ${timeframe} candles, ` +
    `${trades.length} trades` + (lines.length ? ` · ${$("overlay").value}: ${lines.join(", ")}` : "");
}

/** Every trade on its bar (a trade at a bar's close belongs to that bar): buys below, sells above. */
function drawTrades() {
  const label = trades.length < 200;
  tradeMarks.setMarkers(trades.map((t) => {
    const time = Math.max(firstBar, Math.floor((t.event_time - 1) / 1000 / step) * step);
    return t.side === "buy"
      ? {time, position: "belowBar", color: "#a3be8c", shape: "arrowUp", text: label ? t.strategy : ""}
      : {time, position: "aboveBar", color: "#bf616a", shape: "arrowDown", text: label ? t.strategy : ""};
  }));
  note();
}

export async function loadTrades() {
  if (!symbol || !firstBar) return;
  const asked = symbol;
  let answer;
  try { answer = await getJSON(`/api/trades?symbol=${asked}&since_et=${firstBar * 1000}`); } catch (e) { return; }
  if (asked !== symbol) return;  // another symbol was picked meanwhile
  trades = answer.trades;
  drawTrades();
}

async function loadChart() {
  const asked = symbol;
  let data;
  try { data = await getJSON(`/api/candles?symbol=${asked}&n=${CANDLES}`); } catch (e) { return; }
  if (asked !== symbol) return;  // another symbol was picked meanwhile: its own load draws it
  const bars = data.candles;
  timeframe = data.timeframe;
  step = bars.length > 1 ? bars[1].time - bars[0].time : 60;
  firstBar = bars.length ? bars[0].time : 0; lastBar = bars.length ? bars.at(-1).time : 0;
  candles.setData(bars);
  volume.setData(bars.map(volumeBar));
  await Promise.all([loadTrades(), loadOverlays()]);
  note();
}

/** A line broken where it has no value for a bar (a seller-exhaustion stop exists only while a position is open). */
function broken(points) {
  const out = [];
  points.forEach((p, i) => {
    if (i && p.time - points[i - 1].time > step) out.push({time: points[i - 1].time + step});
    out.push(p);
  });
  return out;
}

/** The chosen strategy's price features (its averages, bands, channels; a seller-exhaustion position's stop,
 * Fibonacci levels and target) replayed over the chart's candles with the parameters it trades with. */
async function loadOverlays() {
  const strategy = $("overlay").value, asked = symbol;
  let data = {series: {}};
  if (strategy && asked) {
    try { data = await getJSON(`/api/overlays?symbol=${asked}&strategy=${strategy}&n=${CANDLES}`); } catch (e) { return; }
    if (asked !== symbol || strategy !== $("overlay").value) return;  // the choice changed meanwhile
  }
  for (const [name, series] of Object.entries(overlays)) {
    if (!(name in data.series)) { chart.removeSeries(series); delete overlays[name]; }
  }
  Object.entries(data.series).forEach(([name, points], i) => {
    overlays[name] ??= chart.addSeries(LW.LineSeries, {color: palette[i % palette.length], lineWidth: 1, title: name,
                                                       priceLineVisible: false, lastValueVisible: false});
    overlays[name].setData(broken(points));
  });
  note();
}

/** A closed candle from the stream: drawn at once, no reload. */
export function onCandle(event) {
  if (event.symbol !== symbol || event.tf !== timeframe) return;
  const bar = {time: event.open_time / 1000, open: event.open, high: event.high, low: event.low, close: event.close,
               volume: event.volume};
  if (bar.time < lastBar) return;
  candles.update(bar); volume.update(volumeBar(bar));
  lastBar = bar.time;
  if (!firstBar) firstBar = bar.time;
  note();
  if ($("overlay").value) overlaysLater();
}
const overlaysLater = coalesce(loadOverlays, 500);  // the lines follow new candles, redrawn at most twice a second

function pick(next) {
  symbol = next;
  for (const b of $("symbols").children) b.classList.toggle("on", b.dataset.symbol === symbol);
  loadChart();
}

// The equity curves: the portfolio's on the right scale, each strategy's on the left (every 15 market minutes).
const equityChart = LW.createChart($("equitychart"), {...chartTheme, leftPriceScale: {visible: true}});
const equityLines = {};
function line(name, color, width, scale) {
  if (!equityLines[name]) equityLines[name] = equityChart.addSeries(LW.LineSeries, {color, lineWidth: width, title: name,
                                                                                     priceScaleId: scale});
  return equityLines[name];
}
export async function loadEquity() {
  let data;
  try { data = await getJSON("/api/equity"); } catch (e) { return; }
  const points = (rows) => rows.map((r) => ({time: Math.floor(r.time / 1000), value: Number(r.equity)}));
  line("portfolio", "#eceff4", 3, "right").setData(points(data.portfolio));
  Object.entries(data.strategies).forEach(([name, rows], i) =>
    line(name, palette[i % palette.length], 1, "left").setData(points(rows)));
  equityChart.timeScale().fitContent();
  $("equitynote").textContent = `${data.portfolio.length} points`;
}

let started = false;
export function draw(s) {
  if (!started) {
    started = true;
    $("symbols").innerHTML = s.symbols.map((x) => `<button class="soft" data-symbol="${esc(x)}">${esc(x)}</button>`).join("");
    for (const b of $("symbols").children) b.onclick = () => pick(b.dataset.symbol);
    $("overlay").innerHTML = '<option value="">no overlay</option>' +
      s.accounts.map((a) => `<option>${esc(a.strategy)}</option>`).join("");
    $("overlay").onchange = loadOverlays;
    pick(s.symbols[0]);
    loadEquity();
  }
  $("accounts").innerHTML = row(["strategy", num("allocation"), num("cash"), num("equity"), num("P&L"), num("return"),
                                 "trading"], "th") +
    s.accounts.map((a) => row([esc(a.strategy), num(pct(s.allocations[a.strategy], 2)), num(money(a.cash)),
      num(money(a.equity)), num(money(a.pnl)), num(a.nav ? pct((Number(a.nav) - 1) * 100, 2) : "-"),
      a.strategy === "cash" ? '<span class="note">cash line</span>'
        : a.active ? '<span class="ok">active</span>'
        : `<span class="bad" title="${esc(a.deactivated_because)}">deactivated</span>`])).join("");
  // the cash line: capital the allocator gives no strategy, as no validation showed it an edge
  const held = s.allocations.cash;
  $("allocreason").textContent = (held ? `Cash line: ${pct(held, 2)} of the capital held in cash (at most ` +
    `${pct(s.allocation_cash_max_pct, 0)}). ` : "") + (s.allocation_reason || "");
  // futures (market usdm): a short's qty is negative; each position shows its isolated margin and liquidation price
  const futures = s.market === "usdm";
  $("positions").innerHTML = row(["strategy", "symbol", num("qty"), num("avg price"), num("last"), num("unrealized"),
                                  ...(futures ? [num("margin"), num("liq. price")] : [])], "th") +
    s.positions.map((p) => row([esc(p.strategy), esc(p.symbol),
      num(`<span class="${Number(p.qty) < 0 ? "sell" : "buy"}">${esc(p.qty)}</span>`), num(fmt(p.avg_price)),
      num(fmt(p.last_price)), num(money(p.unrealized_pnl)),
      ...(futures ? [num(money(p.margin)), num(p.liquidation_price ? fmt(p.liquidation_price) : "-")] : [])])).join("");
  $("lasttrades").innerHTML = row(["time", "strategy", "side", num("qty"), "symbol", num("price"), num("fee"),
                                   num("realized")], "th") +
    (s.last_trades || []).map((t) => row([when(t.event_time), esc(t.strategy), `<span class="${esc(t.side)}">${esc(t.side)}</span>`,
      num(esc(t.qty)), esc(t.symbol), num(fmt(t.price)), num(money(t.fee, 4)), num(money(t.realized_pnl))])).join("");
}

export function refresh() { loadEquity(); }
