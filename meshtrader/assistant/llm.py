"""The optional language model: any server speaking OpenAI's chat-completions protocol (OpenAI, vLLM, Ollama),
through the official `openai` client. It writes an answer from the numbered facts the assistant retrieved, and
that answer is kept only if every citation in it points at one of them."""
from __future__ import annotations

import re
from typing import NamedTuple

from meshtrader.runtime.config import Settings, credential

KEY_VARIABLE = "MESH_LLM_KEY"
NO_KEY = "unused"  # local servers (vLLM, Ollama) take any key; the client insists on one
CITATION = re.compile(r"\[([^\[\]\n]{1,120})\]")
SYSTEM_PROMPT = (
    "You are Meshtrader's assistant. Answer the operator's question using only the numbered facts given, which "
    "come from the trading system's own records and documentation. Cite every statement with the number of the "
    "fact it comes from in square brackets, e.g. [2] or [1][3]. Do not use outside knowledge and do not invent "
    "figures, records or citations; if the facts do not answer the question, say so. You cannot trade or change "
    "anything: when asked to act, give the command the facts show, for the operator to run. Be brief.")


class ModelUnavailable(Exception):
    """The model did not answer (unreachable, timed out, refused the request)."""


class ChatModel:
    """A chat-completions model at MESH_LLM_URL."""

    def __init__(self, settings: Settings) -> None:
        if not settings.llm_url:
            raise ValueError("MESH_LLM_URL is not set")
        import openai  # 0.8 s to import: only when a model is configured

        self.name = settings.llm_model
        self.errors = openai.OpenAIError
        self.client = openai.OpenAI(base_url=settings.llm_url, api_key=credential(KEY_VARIABLE) or NO_KEY,
                                    timeout=settings.llm_timeout_s, max_retries=1)

    def complete(self, question: str, facts: str) -> str:
        try:
            reply = self.client.chat.completions.create(
                model=self.name, temperature=0,
                messages=[{"role": "system", "content": SYSTEM_PROMPT},
                          {"role": "user", "content": f"Question: {question}\n\nFacts:\n{facts}"}])
        except self.errors as error:
            raise ModelUnavailable(f"{type(error).__name__}: {error}") from None
        if not reply.choices or not reply.choices[0].message.content:
            raise ModelUnavailable("the model returned no text")
        return reply.choices[0].message.content.strip()


class CitationCheck(NamedTuple):
    cited: list[int]  # the fact numbers the answer cites, in order of first use
    problem: str | None  # why the answer is refused, None if it stands


def check_citations(answer: str, sources: list[str]) -> CitationCheck:
    """Every bracketed citation must name a fact given, by its number or its exact source; an answer citing
    nothing, or anything not retrieved, is refused."""
    cited: list[int] = []
    for group in CITATION.findall(answer):
        for token in (t.strip() for t in group.split(",")):
            if token.isdigit() and 1 <= int(token) <= len(sources):
                number = int(token)
            elif token in sources:
                number = sources.index(token) + 1
            else:
                return CitationCheck(cited, f"it cites [{token}], which is not among the {len(sources)} facts "
                                            f"retrieved")
            if number not in cited:
                cited.append(number)
    if not cited:
        return CitationCheck(cited, "it cites none of the facts retrieved")
    return CitationCheck(cited, None)
