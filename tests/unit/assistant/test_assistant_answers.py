"""Questions whose answers are known, answered offline (no language model) with the records and the document
sections they must cite: from a store holding a known history (tests/support/assistant_records.py) and the
project's own documentation."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import assistant_records
from support.assistant_records import FILLED_ORDER, FILLED_SIGNAL, FORK, REFUSED_ORDER

from meshtrader.assistant.answer import Assistant, QuestionError
from meshtrader.runtime.config import REPO_ROOT, load_settings

RISK_STATE = {"trading_state": "HALTED", "reason": "kill switch on", "kill_switch": True,
              "limits": [{"limit": "daily loss", "used": "0.0120", "of": "0.05"},
                         {"limit": "exposure", "used": "0.0499", "of": "0.80"}]}
KNOWN = assistant_records.Known()

# (question, citations the answer must carry, the command it must give or None)
QUESTIONS = [
    (f"Why was order {REFUSED_ORDER} rejected?", [KNOWN.refusal, f"order {REFUSED_ORDER}"], None),
    ("Why did momentum stop trading?", [KNOWN.deactivation, f"trade {FILLED_ORDER}-1"], None),
    ("What was the reason for the last reallocation?", [KNOWN.reallocation, KNOWN.first_allocation], None),
    ("What did the last validation decide and why?", [KNOWN.fork, KNOWN.reallocation], None),
    ("Which orders were rejected?", [KNOWN.refusal, KNOWN.halted_refusal], None),
    ("What regime is the market in now?", [KNOWN.regime, KNOWN.first_regime], None),
    ("What did the narrator say lately?", [KNOWN.highlight], None),
    (f"What did fork {FORK} find?", [KNOWN.fork], None),
    (f"Explain signal {FILLED_SIGNAL}", [f"order {FILLED_ORDER}", f"signal {FILLED_SIGNAL}", "risk_events #1"], None),
    ("Is the kill switch on?", ["risk state", KNOWN.kill_switch], None),
    ("What is the current risk use?", ["risk state"], None),
    ("What does MESH_VALIDATION_LOSS_PCT do?", ["knowledge/config/settings.md#mesh_validation_loss_pct"], None),
    ("How do I restart the executor safely?", [], "restart executor"),
    ("Please close all positions", [], "mesh close-all"),
]


@pytest.fixture(scope="module")
def assistant(tmp_path_factory) -> Assistant:
    settings = load_settings(home=tmp_path_factory.mktemp("assistant"))
    assistant_records.build(settings.db_path)
    return Assistant(settings, risk_state=lambda: RISK_STATE, model=None)


@pytest.mark.parametrize(("question", "cited", "command"), QUESTIONS, ids=[q for q, _, _ in QUESTIONS])
def test_a_question_is_answered_with_the_records_and_sections_it_rests_on(assistant, question, cited, command):
    answer = assistant.ask(question)
    sources = [fact.source for fact in answer.facts]
    assert set(cited) <= set(sources), (question, sources)
    for source in cited:  # each cited in the text with its number, as the reader sees it
        assert f"{sources.index(source) + 1}: {source}]" in answer.text
    if command:
        assert answer.command and command in answer.command
    assert answer.model is None and answer.refused is None


def test_what_happened_is_answered_from_the_records_and_how_from_the_docs(assistant):
    happened = assistant.ask(f"Why was order {REFUSED_ORDER} rejected?")
    assert {f.kind for f in happened.facts} == {"record"}
    assert "max_order_pct" in happened.text and "25000.00" in happened.text
    stopped = assistant.ask("Why did momentum stop trading?").text
    assert "deactivated" in stopped and "2025-05-12 07:00 UTC" in stopped
    how = assistant.ask("How do I restart the executor safely?")
    assert how.facts and {f.kind for f in how.facts} == {"doc"}
    assert any(f.source.startswith("knowledge/runbooks/restart-a-service.md#") for f in how.facts[:2]), \
        [f.source for f in how.facts]


def test_asked_to_act_it_gives_the_command_and_acts_on_nothing(assistant):
    for question, command in (("Turn on the kill switch", "mesh kill-switch on"),
                              ("release the kill switch", "mesh kill-switch off"), ("pause trading", "mesh pause"),
                              ("restart the risk guard", "restart risk"), ("restart the fork manager", "restart forks"),
                              ("restart the frobnicator", "status"),
                              ("run a validation now", "mesh validate"), ("buy 1 BTC", "mesh status"),
                              ("reset the drawdown peak", "mesh reset-peak"),
                              ("lift the daily loss halt", "mesh lift-daily-halt"),
                              ("reactivate momentum", "mesh reactivate momentum")):
        answer = assistant.ask(question)
        assert answer.command and command in answer.command, question
        assert answer.text.startswith("I only read; I never trade"), question
        assert not [f for f in answer.facts if f.kind == "record"], question


def test_a_question_that_cannot_be_asked_gets_a_clear_error(assistant):
    with pytest.raises(QuestionError, match="ask a question"):
        assistant.ask("   ")
    with pytest.raises(QuestionError, match="at most 2000 characters"):
        assistant.ask("why " * 600)
    unknown = assistant.ask("explain order mtffffffffffffffffffffffff")
    assert unknown.facts[0].text == "no order or signal mtffffffffffffffffffffffff in the store"


def test_without_a_store_it_says_the_mesh_never_ran(tmp_path):
    lonely = Assistant(load_settings(home=tmp_path), model=None)
    answer = lonely.ask("which orders were rejected?")
    assert answer.facts[0].source == "store" and "never run here" in answer.facts[0].text


def test_mesh_ask_and_mesh_ingest_on_the_command_line(assistant):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")},
           "MESH_HOME": str(assistant.settings.home_dir), "MESH_REDIS_URL": "redis://127.0.0.1:1/0"}

    def mesh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "meshtrader", *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)

    asked = mesh("ask", "--json", "Why", "was", "order", REFUSED_ORDER, "rejected?")
    assert asked.returncode == 0, asked.stderr
    assert KNOWN.refusal in [f["source"] for f in json.loads(asked.stdout)["facts"]]
    empty = mesh("ask", " ")
    assert empty.returncode == 2 and "ask a question" in empty.stderr
    assert mesh("ingest").returncode == 0
    again = mesh("ingest")  # nothing changed since: nothing indexed again
    assert again.returncode == 0 and "0 added, 0 updated, 0 removed" in again.stdout
    assert mesh("ingest", "--check").returncode == 0
