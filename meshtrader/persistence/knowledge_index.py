"""The assistant's index of the documentation: sections of Markdown pages in SQLite FTS5, ranked by BM25.

Its own small SQLite file, whatever the store's backend: it is derived from files in the repository and is
rebuilt from them at will, so it holds nothing a backup would need. A document is re-indexed when its
content's digest changes; a document that is gone is dropped."""
from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (path TEXT PRIMARY KEY, digest TEXT NOT NULL, sections INTEGER NOT NULL,
                                      indexed_at REAL NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS sections USING fts5(
    path UNINDEXED, anchor UNINDEXED, title, body, tokenize = 'porter unicode61');
"""
PARTS_READ = 4  # rows read per section asked for: a long section's parts may fill the first ones
TITLE_WEIGHT, BODY_WEIGHT = 4.0, 1.0  # a word in a section's heading says more about it than one in its text
WORD = re.compile(r"[A-Za-z0-9_]+")
# Words that carry no meaning of their own in a question: left in, they would rank long sections that
# repeat them over the one that answers.
STOPWORDS = frozenset("""a about an and are as at be by can could did do does for from had has have how i if in
into is it its me my of on or our should so that the their them then there these this to was we were what when
where which who why will with would you your""".split())


class Section(NamedTuple):
    """One retrievable passage: a heading of a document and the text under it."""

    path: str  # the document, relative to the knowledge root (e.g. README.md, runbooks/go-live.md)
    anchor: str  # the heading's slug, as GitHub makes it: path#anchor points at the section
    title: str  # the heading with its parents, e.g. "Futures > Funding"
    body: str


class Hit(NamedTuple):
    section: Section
    score: float  # BM25, higher is better (FTS5's rank negated)


class SyncReport(NamedTuple):
    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: int


def match_expression(question: str) -> str | None:
    """An FTS5 query from free text: each meaningful word quoted (so no word is read as FTS5 syntax), any of them
    may match; BM25 ranks the sections with more of them, and rarer ones, first. None if no word is left."""
    words = []
    for word in WORD.findall(question.lower()):
        if word not in STOPWORDS and word not in words:
            words.append(word)
    return " OR ".join(f'"{w}"' for w in words) or None


class KnowledgeIndex:
    """An FTS5 index of documentation sections in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=10)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> KnowledgeIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def digests(self) -> dict[str, str]:
        """Each indexed document's content digest."""
        return dict(self.db.execute("SELECT path, digest FROM documents").fetchall())

    def sync(self, documents: dict[str, tuple[str, list[Section]]]) -> SyncReport:
        """Make the index hold exactly these documents (path -> (digest, sections)): re-index the changed, add the
        new, drop the gone; in one transaction, so a reader never sees half a document."""
        known = self.digests()
        added = sorted(p for p in documents if p not in known)
        updated = sorted(p for p in documents if p in known and known[p] != documents[p][0])
        removed = sorted(p for p in known if p not in documents)
        with self.db:
            for path in updated + removed:
                self.db.execute("DELETE FROM sections WHERE path = ?", (path,))
                self.db.execute("DELETE FROM documents WHERE path = ?", (path,))
            for path in added + updated:
                digest, sections = documents[path]
                self.db.executemany("INSERT INTO sections (path, anchor, title, body) VALUES (?, ?, ?, ?)",
                                    [tuple(s) for s in sections])
                self.db.execute("INSERT INTO documents (path, digest, sections, indexed_at) VALUES (?, ?, ?, ?)",
                                (path, digest, len(sections), time.time()))
        return SyncReport(added, updated, removed, len(documents) - len(added) - len(updated))

    def search(self, question: str, limit: int = 5, paths: Iterable[str] | None = None) -> list[Hit]:
        """The sections that answer the question best by BM25 (heading words weigh more), best first, each once (a
        section cut in parts by its best part); only those of some documents if `paths` is given."""
        expression = match_expression(question)
        if expression is None:
            return []
        where, params = "sections MATCH ?", [expression]
        if paths is not None:
            chosen = list(paths)
            where += f" AND path IN ({', '.join('?' * len(chosen))})"
            params += chosen
        with closing(self.db.execute(
                f"SELECT path, anchor, title, body, bm25(sections, 0, 0, {TITLE_WEIGHT}, {BODY_WEIGHT}) AS rank "
                f"FROM sections WHERE {where} ORDER BY rank LIMIT ?", (*params, limit * PARTS_READ))) as rows:
            best: dict[tuple[str, str], Hit] = {}
            for row in rows:
                best.setdefault((row[0], row[1]), Hit(Section(*row[:4]), -row[4]))
        return list(best.values())[:limit]

    def section(self, path: str, anchor: str) -> Section | None:
        """One section by its address (path#anchor)."""
        row = self.db.execute("SELECT path, anchor, title, body FROM sections WHERE path = ? AND anchor = ?",
                              (path, anchor)).fetchone()
        return Section(*row) if row else None

    def counts(self) -> tuple[int, int]:
        """(documents, sections) indexed."""
        return (self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0],
                self.db.execute("SELECT COUNT(*) FROM sections").fetchone()[0])
