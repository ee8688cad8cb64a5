// Features & regime: the market regime (classification, volatility and trend-strength gauges, history),
// each strategy's live indicator values per symbol, and the learned regime x strategy table.
import {$, chartTheme, esc, fmt, getJSON, num, palette, row, when} from "./core.js";

const LW = LightweightCharts;
const regimeChart = LW.createChart($("regimechart"), {...chartTheme, leftPriceScale: {visible: true}});
const regimeLines = {};

export function draw(s) {
  $("regimes").innerHTML = row(["regime", "strategy", num("score"), num("validations")], "th") +
    (s.regime_table || []).map((r) => row([esc(r.regime.replaceAll("_", " ")), esc(r.strategy), num(fmt(r.score)),
      num(r.samples)])).join("");
}

/** A gauge: the value on a scale reaching past the classifier's thresholds, which are marked below it. */
function gauge(label, value, thresholds, digits) {
  if (value === null || value === undefined) return `<div class="gauge"><small>${label}</small><b>-</b></div>`;
  const max = Math.max(value, ...thresholds) * 1.4;
  return `<div class="gauge"><small>${label}</small><b>${fmt(value, digits)}</b>` +
    `<meter min="0" max="${max}" value="${value}" low="${Math.min(...thresholds)}" high="${Math.max(...thresholds)}"></meter>` +
    `<div class="note">thresholds ${thresholds.map((t) => fmt(t, digits)).join(" / ")}</div></div>`;
}

const words = (x) => esc((x || "-").replaceAll("_", " "));

async function loadRegime() {
  let answer;
  try { answer = await getJSON("/api/regimes?n=500"); } catch (e) { return; }
  const current = answer.current;
  $("regimenote").textContent = current ? `the market's (${answer.market_symbol}'s, which the allocator acts on): ` +
    `${current.regime.replaceAll("_", " ")} since ${when(current.time)}; ${answer.history.length} changes` :
    "no classification yet";
  // per symbol: its regime, the latest reading, and gauges against the classifier's thresholds
  $("gauges").innerHTML = Object.entries(answer.symbols).map(([symbol, g]) =>
    `<div class="gauge"><small>${esc(symbol)}</small><b>${words(g.regime)}</b>` +
    `<div class="note">reading ${words(g.reading)} at ${when(g.as_of)}</div></div>` +
    gauge("volatility (per-bar return std)", g.volatility.value, [g.volatility.high_from], 5) +
    gauge("trend strength (ADX)", g.trend_strength.value, [g.trend_strength.trend_until, g.trend_strength.trend_from], 1) +
    `<div class="gauge"><small>direction (slope)</small><b>${g.slope === null || g.slope === undefined ? "-" :
      (g.slope >= 0 ? "up " : "down ") + fmt(g.slope * 1e4, 2) + " bp/bar"}</b></div>`).join("<hr>");
  const names = [...new Set(answer.history.flatMap((h) => Object.keys(h.metrics || {})))]
    .filter((k) => answer.history.every((h) => typeof (h.metrics || {})[k] === "number" || (h.metrics || {})[k] === undefined));
  names.forEach((name, i) => {
    if (!regimeLines[name]) regimeLines[name] = regimeChart.addSeries(LW.LineSeries, {color: palette[i % palette.length],
      lineWidth: 1, title: name, priceScaleId: i % 2 ? "left" : "right"});
    const points = new Map(answer.history.filter((h) => h.metrics && typeof h.metrics[name] === "number")
      .map((h) => [Math.floor(h.time / 1000), h.metrics[name]]));
    regimeLines[name].setData([...points].map(([time, value]) => ({time, value})));
  });
  regimeChart.timeScale().fitContent();
}

async function loadFeatures() {
  let answer;
  try { answer = await getJSON("/api/features"); } catch (e) { return; }
  const blocks = Object.entries(answer.strategies).map(([strategy, symbols]) => {
    const names = [...new Set(Object.values(symbols).flatMap((s) => Object.keys(s.values || {})))];
    if (!names.length) return `<h3 class="note">${esc(strategy)}: warming up</h3>`;
    return `<h3>${esc(strategy)}</h3><table>` + row(["symbol", "bar", ...names.map((n) => num(esc(n)))], "th") +
      Object.entries(symbols).map(([symbol, s]) => row([esc(symbol), when(s.bar_time),
        ...names.map((n) => num(s.values && n in s.values ? fmt(s.values[n], 4) : "-"))])).join("") + "</table>";
  });
  $("features").innerHTML = blocks.join("");
  $("featurenote").textContent = "price features are drawn on the Trading chart (choose the strategy there)";
}

export function refresh() { loadRegime(); loadFeatures(); }
