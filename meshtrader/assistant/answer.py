"""Answering a question: decide what it asks (what happened, how something works, or an action), gather the facts
from the store's records or the documentation, and answer with each fact cited.

Questions about what happened are answered from the records, by the tools in `records`; questions about how the
mesh works, from the documentation. Without a language model the answer is the facts themselves, formatted; with
one, the model writes the answer from those facts alone, and an answer citing anything else is refused. The
assistant never acts: a question asking it to gets the command to run."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from meshtrader.assistant import records
from meshtrader.assistant.knowledge import SETTINGS_PAGE, digests, documents, index_path, slug
from meshtrader.assistant.llm import ChatModel, ModelUnavailable, check_citations
from meshtrader.assistant.records import Fact
from meshtrader.ops.status import reading
from meshtrader.persistence.knowledge_index import STOPWORDS, WORD, KnowledgeIndex
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import LIVE_CONFIRMATION, REPO_ROOT, Settings
from meshtrader.strategies import known

DOC_HITS = 4  # passages of the documentation an answer quotes at most
EXCERPT_CHARS = 700  # of a passage, in the answer without a model (the model sees more)
MODEL_EXCERPT_CHARS = 1800
MAX_QUESTION_CHARS = 2000
SUPERVISORCTL = ".venv/bin/supervisorctl -c $MESH_HOME/supervisord.conf"

ORDER_ID = re.compile(r"\bmt[0-9a-f]{8,32}\b")
SIGNAL_ID = re.compile(r"\b[a-z][a-z0-9_]*:[A-Z0-9]+:\d+:(?:buy|sell|short|cover)\b")
FORK_ID = re.compile(r"\bfork-[0-9]{14}-[0-9a-f]+\b")
SETTING = re.compile(r"\bMESH_[A-Z0-9_]+\b", re.IGNORECASE)
# questions about how the mesh works (the documentation answers them), not about what it did
ABOUT_DOCS = re.compile(r"\bMESH_[A-Z0-9_]+\b|^\s*(what (is|are) (a|an)\b|explain\b)|\bwhat does\b.*\bmean\b|"
                        r"\bwhat does\b.*\bdo\b|\bdocs?\b|\bdocumentation\b|\bset ?up\b|\bconfigur", re.IGNORECASE)
HAPPENED = re.compile(r"\b(why|when|did|was|were|has|have|last|latest|yesterday|today|recent(ly)?|happen(ed)?|"
                      r"stop(ped)?|decided?|reject(ed)?|refused?|current(ly)?|now|using|used|in use|holding)\b",
                      re.IGNORECASE)
QUESTION_WORD = re.compile(r"^\s*(how|what|why|when|where|which|who|whose|is|are|was|were|does|do|did|can i|could i|"
                           r"should|shall i|tell me|show me|explain|list)\b", re.IGNORECASE)
# what a question asks for -> the record tools that answer it
TOPICS = (
    (re.compile(r"reject|refus|denied|blocked", re.I), "rejections"),
    (re.compile(r"allocat|weight|reweigh|rebalanc|capital split|share of (the )?capital", re.I), "allocations"),
    (re.compile(r"validat|fork|optimi[sz]", re.I), "forks"),
    (re.compile(r"regime|market condition", re.I), "regimes"),
    (re.compile(r"\brisk\b|limit|exposure|halt|kill.?switch|trading state|drawdown|paus|margin", re.I), "risk"),
    (re.compile(r"narrat|highlight|happen|news|stor(y|ies)", re.I), "highlights"),
)
HOW_TO = re.compile(r"^\s*(how (do|can|should|would) (i|we|one|you)|how to|what is the (command|way))\b", re.I)
STOPPED = re.compile(r"\b(stop(ped)?|halt(ed)?|quiet|silent|inactive|not trad|no trades?|deactivat)", re.I)


PROGRAM_ALIASES = {"fork": "forks", "meta": "allocator", "web": "dashboard"}  # "the fork manager", ...


class Action(NamedTuple):
    """Something a question asks to be done: the assistant answers with the command instead."""

    command: str
    note: str


@dataclass
class Answer:
    question: str
    text: str
    facts: list[Fact] = field(default_factory=list)  # numbered from 1 in the text's citations
    command: str | None = None  # what to run when the question asked for an action
    model: str | None = None  # the language model that wrote the text; None: the facts themselves
    refused: str | None = None  # why the model's answer was set aside

    def as_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.text, "command": self.command, "model": self.model,
                "refused": self.refused,
                "facts": [{"n": n, "source": f.source, "kind": f.kind, "text": f.text}
                          for n, f in enumerate(self.facts, 1)]}


class QuestionError(ValueError):
    """A question that cannot be asked (empty, too long)."""


# ----- what a question asks ----------------------------------------------------------------------------------
def action_for(question: str, programs: list[str]) -> Action | None:
    """The command that does what the question asks to be done, if it asks for an action."""
    q = question.lower()
    restart = re.search(r"\brestart\b\s+(?:the\s+)?([a-z_]+)", q)
    if restart:
        named = PROGRAM_ALIASES.get(restart[1], restart[1])
        program = next((p for p in programs if named in (p, p.removeprefix("strategy_"))), None)
        if program:
            return Action(f"{SUPERVISORCTL} restart {program}",
                          f"restarts {program} alone; the rest of the mesh carries on")
        return Action(f"{SUPERVISORCTL} status", "lists the programs to restart by name: "
                      + ", ".join(programs))
    if re.search(r"\breset\b.*\b(peak|drawdown)\b", q):
        return Action("mesh reset-peak --reason '...'", "the portfolio's drawdown counts from the equity now; after a "
                      "drawdown halt, release with mesh kill-switch off (knowledge/runbooks/recover-from-a-halt.md)")
    if re.search(r"\b(lift|end|clear|reset)\b.*\bdaily\b.*\b(halt|loss|limit)\b", q):
        return Action("mesh lift-daily-halt --reason '...'", "ends today's daily loss halt; the day's loss counts "
                      "from the equity now")
    if re.search(r"\b(reactivate|re-?enable|bring back)\b", q):
        named = [p.removeprefix("strategy_") for p in programs if p.startswith("strategy_")
                 and re.search(rf"\b{re.escape(p.removeprefix('strategy_'))}\b", q)]
        return Action(f"mesh reactivate {named[0] if named else 'NAME'} --reason '...'", "lifts its drawdown "
                      "deactivation without waiting for a validation; it trades again once a validation gives it "
                      "capital (mesh validate)")
    if re.search(r"\bkill.?switch\b.*\b(off|release|lift|disable|remove)\b|\b(release|lift|turn off|disable)\b.*"
                 r"\bkill.?switch\b", q):
        return Action("mesh kill-switch off", "trading resumes (the dashboard: POST /api/kill-switch "
                      '{"on": false} with the dashboard token)')
    if re.search(r"\bkill.?switch\b|\b(halt|stop)\b.*\btrading\b", q):
        return Action("mesh kill-switch on", "every order is refused (HALTED) until mesh kill-switch off")
    if re.search(r"\b(close|flatten|liquidate|exit)\b.*\b(all|every|positions?)\b", q):
        return Action("mesh close-all --reason 'asked the assistant'",
                      "sells (and covers) every open position at market; it asks for confirmation")
    if re.search(r"\bresume\b|\bunpause\b", q):
        return Action("mesh resume", "lifts the pause")
    if re.search(r"\bpause\b", q):
        return Action("mesh pause", "only exposure-reducing orders pass until mesh resume")
    if re.search(r"\b(set|change|raise|lower|loosen|tighten)\b.*\blimit\b", q):
        return Action("mesh limit NAME VALUE", "changes one risk limit at run time (mesh limit lists the names)")
    if re.search(r"\boptimi[sz]e\b", q):
        return Action("mesh validate --optimize", "validates on a fork and optimises the next strategy's parameters")
    if re.search(r"\b(run|start|trigger|do)\b.*\bvalidation\b|\bvalidate\b", q):
        return Action("mesh validate", "validates the strategies on a fork now; the allocator reweights")
    if re.search(r"\bgo(ing)? live\b|\btrade live\b|\blive trading\b", q):
        return Action(f"MESH_LIVE_CONFIRM={LIVE_CONFIRMATION} mesh up --mode live",
                      "after the checks of knowledge/runbooks/go-live.md; API keys from the environment or .env only")
    if re.search(r"\b(stop|shut ?down)\b.*\bmesh\b|\bshut ?down\b", q):
        return Action("mesh down", "stops every service of the mesh")
    if re.search(r"\b(buy|sell|short|cover|place|open)\b.*\b(order|position|btc|eth|\d)", q):
        return Action("mesh status", "orders come only from the strategies, sized by the executor and approved by the "
                      "risk guard: there is no manual order; mesh status shows what is open")
    return None


def strategies_named(question: str, names: list[str]) -> list[str]:
    q = question.lower()
    return [n for n in names if re.search(rf"\b({re.escape(n)}|{re.escape(n.replace('_', ' '))})\b", q)]


class Plan(NamedTuple):
    """What a question will be answered from."""

    tools: list[tuple[Callable[..., list[Fact]], dict[str, Any]]]  # record tools and their arguments
    docs: bool
    action: Action | None
    asks_to_act: bool


def plan(question: str, strategies: list[str], programs: list[str]) -> Plan:
    how_to = bool(HOW_TO.match(question))
    action = action_for(question, programs) if how_to or not QUESTION_WORD.match(question) else None
    asks_to_act = action is not None and not how_to
    if asks_to_act:  # what to run, and the documentation on it: the records are not asked for
        return Plan([], docs=True, action=action, asks_to_act=True)
    about_docs = how_to or bool(ABOUT_DOCS.search(question))
    tools: list[tuple[Callable[..., list[Fact]], dict[str, Any]]] = []
    if order := ORDER_ID.search(question) or SIGNAL_ID.search(question):
        tools.append((records.explain_order, {"order_id": order[0]}))
    named = strategies_named(question, strategies)
    topics = {topic for pattern, topic in TOPICS if pattern.search(question)}
    if tools or not about_docs and (HAPPENED.search(question) or topics or named):
        strategy = named[0] if named else None
        for name in named:
            tools.append((records.strategy_activity, {"strategy": name}))
        if "rejections" in topics and not tools:
            tools.append((records.rejections, {"strategy": strategy}))
        if "forks" in topics:
            fork = FORK_ID.search(question)
            purpose = "optimization" if re.search(r"optimi[sz]", question, re.I) else "validation"
            tools.append((records.fork_results, {"fork_id": fork[0] if fork else None, "purpose": purpose}))
        if "allocations" in topics or ("forks" in topics and not FORK_ID.search(question)):
            tools.append((records.allocation_history, {"n": 1 if "forks" in topics else records.RECORDS}))
        if "regimes" in topics:
            tools.append((records.regimes, {}))
        if "risk" in topics or (named and STOPPED.search(question)):
            tools.append((records.risk_now, {}))
            tools.append((records.state_changes, {"n": 3}))
        if "highlights" in topics or not tools:
            tools.append((records.highlights, {}))
    return Plan(tools, docs=about_docs or not tools or action is not None, action=action, asks_to_act=asks_to_act)


# ----- the assistant ------------------------------------------------------------------------------------------
class Assistant:
    """Answers questions about one mesh (its settings locate the store, the hot state and the index)."""

    def __init__(self, settings: Settings, risk_state: Callable[[], dict] | None = None,
                 root: Path = REPO_ROOT, model: ChatModel | None = None) -> None:
        self.settings = settings
        self.root = root
        self.risk_state = risk_state or (lambda: {})
        self.model = model if model is not None else (ChatModel(settings) if settings.llm_url else None)
        self.strategies = sorted(set(settings.strategies) | set(known()))
        self.programs = [p.name for p in settings.programs()]

    def index(self) -> KnowledgeIndex:
        """The documentation index, brought up to date first if a document changed since it was built."""
        index = KnowledgeIndex(index_path(self.settings))
        if index.digests() != digests(self.root):
            index.sync(documents(self.root))
        return index

    def search_docs(self, question: str, limit: int = DOC_HITS) -> list[Fact]:
        """The documentation's best passages for a question: a setting it names first (its own section), then BM25."""
        with self.index() as index:
            exact = [index.section(SETTINGS_PAGE.as_posix(), slug(name.upper()))
                     for name in dict.fromkeys(m.upper() for m in SETTING.findall(question))]
            hits = [s for s in exact if s is not None]
            hits += [h.section for h in index.search(question, limit + len(hits))
                     if (h.section.path, h.section.anchor) not in {(s.path, s.anchor) for s in hits}]
        return [Fact(f"{s.path}#{s.anchor}", f"{s.title}: {s.body}", "doc") for s in hits[:limit]]

    def gather(self, question: str, how: Plan) -> list[Fact]:
        facts: list[Fact] = []
        if how.tools:
            with reading(self.settings) as store:
                for tool, arguments in how.tools:
                    facts += self.run_tool(store, tool, arguments)
        if how.docs:
            facts += self.search_docs(question)
        return list(dict.fromkeys(facts))

    def run_tool(self, store: Store | None, tool: Callable[..., list[Fact]], arguments: dict) -> list[Fact]:
        if tool is records.risk_now:
            return records.risk_now(self.risk_state())
        if store is None:
            return [Fact("store", "the mesh has no store yet: it has never run here (mesh up starts it)")]
        return tool(store, **arguments)

    def ask(self, question: str) -> Answer:
        question = " ".join(question.split())
        if not question:
            raise QuestionError("ask a question, e.g. mesh ask \"why did momentum stop trading?\"")
        if len(question) > MAX_QUESTION_CHARS:
            raise QuestionError(f"a question is at most {MAX_QUESTION_CHARS} characters (this one has "
                                f"{len(question)})")
        how = plan(question, self.strategies, self.programs)
        facts = self.gather(question, how)
        answer = Answer(question, offline_text(question, how, facts), facts, how.action.command if how.action else None)
        if self.model is None or not facts:
            return answer
        numbered = "\n".join(f"[{n}] ({f.source}) {f.text[:MODEL_EXCERPT_CHARS]}" for n, f in enumerate(facts, 1))
        if how.action:
            numbered += f"\nThe command for what was asked: {how.action.command} ({how.action.note})"
        try:
            written = self.model.complete(question, numbered)
        except ModelUnavailable as error:
            answer.refused = f"the language model did not answer ({error}); these are the facts themselves"
            return answer
        check = check_citations(written, [f.source for f in facts])
        if check.problem is not None:
            answer.model, answer.refused = self.model.name, f"the model's answer was refused: {check.problem}"
            return answer
        answer.text, answer.model = written, self.model.name
        return answer


def focused(text: str, question: str, limit: int = EXCERPT_CHARS) -> str:
    """A passage cut to the paragraphs (or table rows) that hold the question's words, in their order: the part of a
    long section that answers, not its first lines."""
    if len(text) <= limit:
        return text
    words = {w for w in WORD.findall(question.lower()) if w not in STOPWORDS and len(w) > 2}
    blocks = [b for b in re.split(r"\n\s*\n|\n(?=\|)", text) if b.strip()]
    ranked = sorted(range(len(blocks)), key=lambda i: -sum(w in blocks[i].lower() for w in words))
    chosen, used = set(), 0
    for i in ranked:
        if used and used + len(blocks[i]) > limit:
            continue
        chosen.add(i)
        used += len(blocks[i])
    shown = [blocks[0]] if 0 not in chosen and len(blocks[0]) < 160 else []  # a short lead names what it is about
    shown += [blocks[i] if len(blocks[i]) <= limit else blocks[i][:limit].rsplit(" ", 1)[0] + " ..."
              for i in sorted(chosen)]
    return "\n".join(shown) + (" ..." if len(chosen) < len(blocks) else "")


def offline_text(question: str, how: Plan, facts: list[Fact]) -> str:
    """The answer without a model: the command if one was asked for, then each fact with its citation."""
    lines = []
    if how.action:
        lead = "I only read; I never trade or change anything. To do it, run" if how.asks_to_act else "The command"
        lines += [f"{lead}:", f"    {how.action.command}", f"({how.action.note})", ""]
    records_, docs = [f for f in facts if f.kind == "record"], [f for f in facts if f.kind == "doc"]
    number = {f: n for n, f in enumerate(facts, 1)}
    if records_:
        lines.append("From the records:")
        lines += [f"- {f.text} [{number[f]}: {f.source}]" for f in records_]
    if docs:
        if records_:
            lines.append("")
        lines.append("From the documentation:")
        lines += [f"- [{number[f]}: {f.source}] {focused(f.text, question)}" for f in docs]
    if not facts:
        lines.append("Nothing in the records or the documentation matches that question.")
    return "\n".join(lines).strip()
