// Narratives: the narrator's highlights as a timeline, newest on top; new ones arrive on the stream. Fork
// creations are many and routine: left out unless asked for (the Forks view shows them all).
import {$, esc, getJSON, when} from "./core.js";

const ROUTINE = new Set(["fork_created"]);
let all = [];

const article = (h) => `<article><span class="kind">${esc(h.kind.replaceAll("_", " "))} · ${when(h.event_time)}</span>` +
  `<h4>${esc(h.title)}</h4><p>${esc(h.body)}</p></article>`;

function shown() {
  const choice = $("narrkind").value;
  return all.filter((h) => choice === "all" || (choice === "" ? !ROUTINE.has(h.kind) : h.kind === choice));
}

function drawStory() {
  const kinds = [...new Set(all.map((h) => h.kind))].sort();
  const choice = $("narrkind").value;
  $("narrkind").innerHTML = '<option value="">highlights</option><option value="all">everything</option>' +
    kinds.map((k) => `<option value="${esc(k)}">${esc(k.replaceAll("_", " "))}</option>`).join("");
  $("narrkind").value = choice;
  const story = shown();
  $("narratives").innerHTML = story.map(article).join("");
  $("narrnote").textContent = `${story.length} of the latest ${all.length}`;
}

export async function refresh() {
  try { all = (await getJSON("/api/narratives?n=300")).narratives; } catch (e) { return; }
  drawStory();
}

export function onHighlight(event) {
  all.unshift({...event, event_time: event.et});
  drawStory();
}

$("narrkind").onchange = drawStory;
