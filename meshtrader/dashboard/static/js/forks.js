// Forks: a timeline of every fork from its creation to its destruction, a lane per purpose; the active
// ones with their age and time to live; counts and time per purpose; and what each produced.
import {$, ago, esc, getJSON, num, palette, row, wallclock} from "./core.js";

const LANE = 26, AXIS = 22, LABEL = 110;
let marketNow = 0;

export function draw(s) { marketNow = s.event_time || 0; }

function timeline(forks) {
  const box = $("forktimeline");
  const width = Math.max(box.clientWidth || 900, 600), now = Date.now() / 1000;
  const purposes = [...new Set(forks.map((f) => f.purpose))].sort();
  if (!forks.length) { box.innerHTML = '<p class="note">No forks yet: the allocator makes them to validate strategies.</p>'; return; }
  const start = Math.min(...forks.map((f) => f.created_at)), end = Math.max(now, ...forks.map((f) => f.destroyed_at || now));
  const x = (t) => LABEL + (t - start) / Math.max(end - start, 1) * (width - LABEL - 10);
  const height = AXIS + purposes.length * LANE + 4;
  const ticks = Array.from({length: 6}, (_, i) => start + (end - start) * i / 5);
  const bars = forks.map((f) => {
    const lane = purposes.indexOf(f.purpose), y = AXIS + lane * LANE + 4;
    const gone = f.destroyed_at || f.lived_s === null;  // a fork that failed has no time of death: a stub
    const x0 = x(f.created_at), x1 = Math.max(x(f.destroyed_at || (gone ? f.created_at : now)), x0 + 3);
    const colour = f.status === "failed" ? "#bf616a" : gone ? palette[lane % palette.length] : "#eceff4";
    const title = `${f.fork_id} · ${f.purpose} by ${f.requester} · ${f.status}${f.kept ? " (kept)" : ""}\n` +
      `created ${wallclock(f.created_at)}, lived ${ago(f.lived_s)}\n${f.produced || ""}`;
    return `<rect x="${x0}" y="${y}" width="${x1 - x0}" height="${LANE - 8}" rx="3" fill="${colour}" ` +
      `opacity="${gone ? 0.75 : 1}"><title>${esc(title)}</title></rect>`;
  }).join("");
  const lanes = purposes.map((p, i) => `<text x="4" y="${AXIS + i * LANE + LANE / 2 + 4}" fill="#d8dee9" ` +
    `font-size="12">${esc(p)}</text><line x1="${LABEL}" x2="${width}" y1="${AXIS + (i + 1) * LANE}" ` +
    `y2="${AXIS + (i + 1) * LANE}" stroke="#242c35"/>`).join("");
  const axis = ticks.map((t) => `<text x="${x(t)}" y="14" fill="#8791a0" font-size="11" text-anchor="middle">` +
    `${new Date(t * 1000).toISOString().slice(11, 19)}</text>`).join("");
  box.innerHTML = `<svg width="${width}" height="${height}">${axis}${lanes}${bars}</svg>`;
}

export async function refresh() {
  let answer;
  try { answer = await getJSON("/api/forks?n=300"); } catch (e) { return; }
  const forks = answer.forks;
  timeline(forks);
  const active = forks.filter((f) => !f.destroyed_at && f.lived_s !== null);
  $("forknote").textContent = `${forks.length} forks, ${active.length} active (white); hover a bar for what it produced`;
  $("forkpurposes").innerHTML = row(["purpose", num("forks"), num("active"), num("total time"), num("mean time")], "th") +
    Object.entries(answer.by_purpose).map(([p, s]) => row([esc(p), num(s.count), num(s.active), num(ago(s.total_s)),
      num(ago(s.mean_s))])).join("");
  // a fork's time to live runs on market time (replays run faster than the clock)
  $("forkactive").innerHTML = row(["fork", "purpose", "by", num("age"), num("TTL"), num("left (market time)")], "th") +
    active.map((f) => row([esc(f.fork_id), esc(f.purpose), esc(f.requester), num(ago(f.lived_s)), num(ago(f.ttl_s)),
      num(marketNow ? ago(Math.max(0, (f.expires_et - marketNow) / 1000)) : "-")])).join("");
  $("forks").innerHTML = row(["fork", "purpose", "by", "status", "created", num("lived"), "produced"], "th") +
    forks.map((f) => row([esc(f.fork_id) + (f.kept ? ' <span class="note">kept</span>' : ""), esc(f.purpose),
      esc(f.requester), esc(f.status), wallclock(f.created_at), num(ago(f.lived_s)),
      {html: esc(f.produced || ""), cls: "wrap"}])).join("");
}
