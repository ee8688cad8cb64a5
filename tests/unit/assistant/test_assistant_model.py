"""The language-model path, through the official openai client, against a local server speaking the chat-completions
protocol (the test double at that boundary): the model writes from the numbered facts and cites them; an answer
citing a record it was not given, or nothing, is refused and the facts themselves are the answer."""
from __future__ import annotations

import re
import socket

import pytest
from support import assistant_records
from support.assistant_records import REFUSED_ORDER
from support.chat_server import ChatServer

from meshtrader.assistant.answer import Assistant
from meshtrader.runtime.config import load_settings

KEY = "planted-llm-key-0003"
QUESTION = f"Why was order {REFUSED_ORDER} rejected?"
KNOWN = assistant_records.Known()


def number_of(messages: list[dict], source: str) -> int:
    """The number the assistant gave a fact, read from the prompt it sent."""
    return int(re.search(rf"^\[(\d+)\] \({re.escape(source)}\)", messages[-1]["content"], re.MULTILINE)[1])


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("assistant-model")
    assistant_records.build(load_settings(home=home).db_path)
    return home


@pytest.fixture
def model_says(home, monkeypatch):
    """An assistant whose model answers with what the test's script writes."""
    monkeypatch.setenv("MESH_LLM_KEY", KEY)
    servers = []

    def make(script) -> tuple[Assistant, ChatServer]:
        server = ChatServer(script)
        servers.append(server)
        settings = load_settings(home=home, llm_url=server.url, llm_model="test-model", llm_timeout_s=10)
        return Assistant(settings), server

    yield make
    for server in servers:
        server.close()


def test_the_model_writes_the_answer_from_the_facts_and_cites_them(model_says):
    def cite_the_refusal(messages: list[dict]) -> str:
        n = number_of(messages, KNOWN.refusal)
        return f"The risk guard refused it by max_order_pct: its notional 25000.00 was over 20% [{n}]."

    assistant, server = model_says(cite_the_refusal)
    answer = assistant.ask(QUESTION)
    assert answer.model == "test-model" and answer.refused is None
    assert answer.text.startswith("The risk guard refused it by max_order_pct")
    cited = int(re.search(r"\[(\d+)\]", answer.text)[1])
    assert answer.facts[cited - 1].source == KNOWN.refusal
    request = server.requests[-1]
    assert request["headers"]["authorization"] == f"Bearer {KEY}"  # the key from the environment only
    body = request["body"]
    assert body["model"] == "test-model" and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system" and "only the numbered facts" in body["messages"][0]["content"]
    assert QUESTION in body["messages"][1]["content"] and f"({KNOWN.refusal})" in body["messages"][1]["content"]


@pytest.mark.parametrize(("written", "problem"), [
    ("It was refused by the daily loss limit [risk_events #999].", "cites [risk_events #999], which is not among"),
    ("It was refused [1][42].", "cites [42], which is not among"),
    ("It was refused because the market was closed.", "cites none of the facts retrieved"),
])
def test_an_answer_citing_what_was_not_retrieved_is_refused(model_says, written, problem):
    assistant, _ = model_says(lambda _messages: written)
    answer = assistant.ask(QUESTION)
    assert answer.refused and problem in answer.refused
    assert answer.text != written and f"{KNOWN.refusal}]" in answer.text  # the facts themselves, cited
    assert answer.model == "test-model"


def test_a_citation_by_the_facts_own_source_is_accepted(model_says):
    assistant, _ = model_says(lambda _messages: f"Refused by max_order_pct [{KNOWN.refusal}].")
    answer = assistant.ask(QUESTION)
    assert answer.refused is None and answer.text == f"Refused by max_order_pct [{KNOWN.refusal}]."


def test_without_an_answering_model_the_facts_are_the_answer(home):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = load_settings(home=home, llm_url=f"http://127.0.0.1:{port}/v1", llm_timeout_s=2)
    answer = Assistant(settings).ask(QUESTION)
    assert answer.refused and "did not answer" in answer.refused and answer.model is None
    assert f"{KNOWN.refusal}]" in answer.text
