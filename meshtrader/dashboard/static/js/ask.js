// Ask: a question answered from the mesh's records and documentation (POST /api/ask), with every fact it used
// and where that fact comes from. Without a language model the answer is the facts themselves.
import {$, esc, postJSON} from "./core.js";

const SAMPLES = ["Why did momentum stop trading?", "What did the last validation decide and why?",
  "Which orders were rejected?", "What is the current risk use?", "What does MESH_VALIDATION_LOSS_PCT do?",
  "How do I restart the executor safely?"];

async function ask(question) {
  if (!question.trim()) return;
  $("askbutton").disabled = true;
  $("asknote").textContent = "asking…";
  try {
    const reply = await postJSON("/api/ask", {question});
    $("answer").hidden = false;
    $("answer").textContent = reply.answer;
    $("factshead").hidden = !reply.facts.length;
    $("facts").innerHTML = reply.facts.map((f) =>
      `<li title="${esc(f.text)}"><code>${esc(f.source)}</code> <span class="kind">${esc(f.kind)}</span></li>`).join("");
    $("asknote").textContent = (reply.model ? `written by ${reply.model} from the facts below` :
      "the facts themselves (no language model configured: MESH_LLM_URL)") + (reply.refused ? ` · ${reply.refused}` : "");
  } catch (e) {
    $("asknote").textContent = e.message;
  } finally {
    $("askbutton").disabled = false;
  }
}

$("askform").onsubmit = (event) => { event.preventDefault(); ask($("question").value); };
$("asksamples").innerHTML = SAMPLES.map((q) => `<button type="button" class="soft">${esc(q)}</button>`).join("");
for (const button of $("asksamples").children) {
  button.onclick = () => { $("question").value = button.textContent; ask(button.textContent); };
}
