// What every view shares: formatting, fetching, the live stream and the dashboard token for controls.

export const $ = (id) => document.getElementById(id);

// Text from the mesh (reasons, log lines, names) is escaped before it goes into markup.
export const esc = (x) => String(x ?? "").replace(/[&<>"']/g, (c) =>
  ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);

export const fmt = (x, d = 2) => x === null || x === undefined || x === "" || Number.isNaN(Number(x)) ? "-" :
  Number(x).toLocaleString(undefined, {minimumFractionDigits: d, maximumFractionDigits: d});

// Money arrives as exact decimal strings: shown rounded, the exact figure in the tooltip, coloured by sign.
export const money = (x, d = 2) => x === null || x === undefined ? "-" :
  `<span class="${Number(x) < 0 ? "bad" : "ok"}" title="${esc(x)}">${fmt(x, d)}</span>`;

export const pct = (x, d = 1) => x === null || x === undefined ? "-" : fmt(x, d) + " %";

export const when = (ms) => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 16) : "-";
export const wallclock = (s) => s ? new Date(s * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";

export const ago = (seconds) => seconds === null || seconds === undefined ? "-" : seconds < 120 ? Math.round(seconds) + " s" :
  seconds < 7200 ? Math.round(seconds / 60) + " min" : seconds < 172800 ? Math.round(seconds / 3600) + " h" :
  Math.round(seconds / 86400) + " d";

/** A table row; cells are markup (escape text with esc); a cell may be {html, cls} for a class. */
export const row = (cells, tag = "td") => "<tr>" + cells.map((c) => c !== null && typeof c === "object"
  ? `<${tag} class="${c.cls}">${c.html}</${tag}>` : `<${tag}>${c}</${tag}>`).join("") + "</tr>";
export const num = (html) => ({html, cls: "num"});

// The dashboard token: controls always need it; views too when the dashboard is reachable from other
// machines. Asked for once, kept for this tab only.
const TOKEN = "meshToken";
let refused = false;  // the operator cancelled the prompt for views: do not ask again on every refresh
export const token = () => sessionStorage.getItem(TOKEN);
const authorization = () => (token() ? {"Authorization": "Bearer " + token()} : {});

function askToken(why) {
  const given = prompt(`${why}\nDashboard token (mesh up printed it; also in $MESH_HOME/dashboard.token):`);
  if (given) sessionStorage.setItem(TOKEN, given);
  return !!given;
}

export async function getJSON(path) {
  let answer = await fetch(path, {headers: authorization()});
  if ((answer.status === 401 || answer.status === 403) && !refused) {
    sessionStorage.removeItem(TOKEN);
    refused = !askToken("This dashboard is reachable from other machines: its views need the token too.");
    if (!refused) answer = await fetch(path, {headers: authorization()});
  }
  if (!answer.ok) throw new Error(`${path}: ${answer.status} ${(await answer.text()).slice(0, 200)}`);
  return answer.json();
}

/** A read that takes a body (POST), with the views' token rules. */
export async function postJSON(path, body) {
  const send = () => fetch(path, {method: "POST", body: JSON.stringify(body),
                                  headers: {"Content-Type": "application/json", ...authorization()}});
  let answer = await send();
  if ((answer.status === 401 || answer.status === 403) && !refused) {
    sessionStorage.removeItem(TOKEN);
    refused = !askToken("This dashboard is reachable from other machines: its views need the token too.");
    if (!refused) answer = await send();
  }
  const reply = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(typeof reply.detail === "string" ? reply.detail : `${path}: ${answer.status}`);
  return reply;
}

export async function control(path, body) {
  if (!token() && !askToken("Controls that change trading need the token.")) return null;
  const answer = await fetch(path, {method: "POST", body: JSON.stringify(body),
                                    headers: {"Content-Type": "application/json", ...authorization()}});
  if (answer.status === 401 || answer.status === 403) sessionStorage.removeItem(TOKEN);
  return answer;
}

/** Runs a control and tells the operator what came of it. */
export async function act(path, body, then) {
  const answer = await control(path, body);
  if (!answer) return;
  const reply = await answer.json().catch(() => ({}));
  alert(answer.ok ? reply.message : (typeof reply.detail === "string" ? reply.detail : JSON.stringify(reply.detail)));
  if (then) then();
}

export const chartTheme = {autoSize: true, layout: {background: {color: "#161c23"}, textColor: "#d8dee9"},
  grid: {vertLines: {color: "#242c35"}, horzLines: {color: "#242c35"}}, timeScale: {timeVisible: true}};
export const palette = ["#88c0d0", "#ebcb8b", "#b48ead", "#a3be8c", "#d08770", "#5e81ac", "#bf616a", "#8fbcbb"];

/**
 * The live stream over one WebSocket: a snapshot stamped with a sequence number, then numbered events.
 * A reconnect names the epoch and the last number seen and gets what it missed (or a new snapshot);
 * a number out of order means something was lost, so the page reconnects rather than show a gap.
 */
export class Stream {
  constructor() {
    this.epoch = ""; this.seq = -1; this.handlers = []; this.onSnapshot = () => {}; this.onStatus = () => {};
    this.received = 0;
  }

  on(prefix, handler) { this.handlers.push([prefix, handler]); }

  connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const query = new URLSearchParams(this.epoch ? {epoch: this.epoch, after: this.seq} : {});
    if (token()) query.set("token", token());
    const ws = new WebSocket(scheme + location.host + "/ws?" + query);
    ws.onmessage = (message) => this.receive(ws, JSON.parse(message.data));
    ws.onclose = () => { this.onStatus(false, this.seq); setTimeout(() => this.connect(), 1000); };
    ws.onerror = () => ws.close();
  }

  receive(ws, message) {
    if (message.type === "snapshot" || message.type === "resume") {
      this.epoch = message.epoch; this.seq = message.seq;
      if (message.type === "snapshot") this.onSnapshot(message.state);
      this.onStatus(true, this.seq, message.type);
      return;
    }
    if (message.seq !== this.seq + 1) {  // lost events: resume from the last one seen
      console.warn(`stream: expected ${this.seq + 1}, got ${message.seq}; resuming`);
      ws.onmessage = null; ws.close();
      return;
    }
    this.seq = message.seq; this.received += 1;
    for (const [prefix, handler] of this.handlers) if (message.topic.startsWith(prefix)) handler(message.event, message.topic);
    this.onStatus(true, this.seq);
  }
}

/** Calls `fn` at most once per `ms`, however many times it is asked (a burst of fills: one redraw). */
export function coalesce(fn, ms = 250) {
  let pending = null;
  return () => { if (!pending) pending = setTimeout(() => { pending = null; fn(); }, ms); };
}
