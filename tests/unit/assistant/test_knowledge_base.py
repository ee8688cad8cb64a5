"""The knowledge base: its generated pages match the code, ingestion re-indexes only what changed, and BM25
retrieval over the project's own documentation puts the passage that answers a question on top."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from meshtrader.assistant.knowledge import (
    GENERATED_END,
    documents,
    generated_pages,
    sections_of,
    stale_pages,
    write_pages,
)
from meshtrader.persistence.knowledge_index import KnowledgeIndex, match_expression
from meshtrader.runtime.config import REPO_ROOT, Settings
from meshtrader.strategies import builtin

# a labelled set: a question, and the section that answers it (path#anchor) among the first three hits
RETRIEVAL = [
    ("what does MESH_VALIDATION_LOSS_PCT do", "knowledge/config/settings.md#mesh_validation_loss_pct"),
    ("how do I restart the executor safely", "knowledge/runbooks/restart-a-service.md#"),
    ("how is funding paid on futures positions", "README.md#futures"),
    ("release the kill switch after a halt", "knowledge/runbooks/recover-from-a-halt.md#"),
    ("rotate the exchange API keys", "knowledge/runbooks/rotate-keys.md#"),
    ("go live with real money", "knowledge/runbooks/go-live.md#"),
    ("restore the store from a fork", "knowledge/runbooks/restore-from-a-fork.md#"),
    ("when does the bollinger strategy work", "knowledge/strategies/bollinger.md#"),
    ("momentum strategy parameters rsi_max", "knowledge/strategies/momentum.md#momentum-parameters"),
    ("scrape metrics with Prometheus", "README.md#metrics"),
]


def test_the_generated_pages_are_what_the_code_generates():
    assert stale_pages() == [], "run: mesh ingest --pages"
    for name in builtin():
        page = (REPO_ROOT / "knowledge" / "strategies" / f"{name}.md").read_text()
        hand_written = page.split(GENERATED_END, 1)[1]
        assert "## When it tends to work" in hand_written and "(not written yet)" not in hand_written, name


def test_every_setting_is_documented_by_its_own_description():
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
    page = (REPO_ROOT / "knowledge" / "config" / "settings.md").read_text()
    assert all(f"## MESH_{name.upper()}\n" in page for name in Settings.model_fields)


def test_a_changed_strategy_regenerates_its_page_and_keeps_the_hand_written_part(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "knowledge", root / "knowledge")
    page = root / "knowledge" / "strategies" / "macd.md"
    block, prose = page.read_text().split(GENERATED_END, 1)
    page.write_text(block.replace("MACD", "MAC D") + GENERATED_END + prose)  # as if the code had changed
    assert stale_pages(root) == [page]
    assert write_pages(root) == [page]
    assert page.read_text() == generated_pages(root)[page] and page.read_text().endswith(prose)
    assert stale_pages(root) == []


def test_sections_follow_headings_outside_code_and_long_ones_are_cut():
    text = ("# Top\nintro\n## Run it\n```sh\n# not a heading\nmesh up\n```\n## Run it\nagain\n### Deeper\n"
            + "word " * 900)
    sections = sections_of("doc.md", text)
    assert [(s.anchor, s.title) for s in sections[:3]] == [("top", "Top"), ("run-it", "Top > Run it"),
                                                           ("run-it-1", "Top > Run it")]
    assert "# not a heading" in sections[1].body
    deeper = [s for s in sections if s.anchor == "deeper"]
    assert len(deeper) == 1 or all(s.title == "Top > Run it > Deeper" for s in deeper)
    # a longer fence holds shorter ones (a quoted session): only its own closes it
    quoted = sections_of("doc.md", "# A\n````text\n```sh\n# not a heading\n````\n## B\nafter\n")
    assert [s.anchor for s in quoted] == ["a", "b"] and "# not a heading" in quoted[0].body


def test_ingestion_indexes_only_what_changed(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "knowledge", root / "knowledge")
    shutil.copy(REPO_ROOT / "README.md", root / "README.md")
    with KnowledgeIndex(tmp_path / "knowledge.db") as index:
        first = index.sync(documents(root))
        assert "README.md" in first.added and not first.updated and not first.removed
        documents_count, sections_count = index.counts()
        assert documents_count == len(first.added) and sections_count > 200
        runbook = root / "knowledge" / "runbooks" / "go-live.md"
        runbook.write_text(runbook.read_text() + "\n## Zebra check\n\nA quagga must be fed before going live.\n")
        (root / "knowledge" / "strategies" / "bench.md").unlink()
        again = index.sync(documents(root))
        assert again.added == [] and again.updated == ["knowledge/runbooks/go-live.md"]
        assert again.removed == ["knowledge/strategies/bench.md"] and again.unchanged == documents_count - 2
        assert index.search("quagga")[0].section.anchor == "zebra-check"
        assert index.search("bench", 50, paths=["knowledge/strategies/bench.md"]) == []


@pytest.fixture(scope="module")
def project_index(tmp_path_factory) -> KnowledgeIndex:
    index = KnowledgeIndex(tmp_path_factory.mktemp("index") / "knowledge.db")
    index.sync(documents())
    yield index
    index.close()


@pytest.mark.parametrize(("question", "expected"), RETRIEVAL, ids=[q for q, _ in RETRIEVAL])
def test_bm25_puts_the_answering_section_among_the_first_three(project_index, question, expected):
    found = [f"{h.section.path}#{h.section.anchor}" for h in project_index.search(question, 3)]
    assert any(address.startswith(expected) for address in found), found


def test_free_text_never_reaches_fts5_as_syntax(project_index):
    assert match_expression('what "is" NEAR(a b) OR * ?') == '"near" OR "b"'
    assert match_expression("why is it?") is None and project_index.search("why is it?") == []
    assert project_index.search('kill switch" OR (') != []


def test_the_index_file_is_all_there_is_to_rebuild(tmp_path):
    path: Path = tmp_path / "knowledge.db"
    with KnowledgeIndex(path) as index:
        index.sync(documents())
    path.unlink()
    with KnowledgeIndex(path) as index:
        assert index.counts() == (0, 0) and index.sync(documents()).added
