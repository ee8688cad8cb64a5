"""The knowledge base: the README and knowledge/ (strategies, runbooks, settings), cut into sections and indexed.

The strategy pages' first half and the settings page are generated from the code (the strategy's module
docstring and parameter model, the settings' own descriptions), so they cannot drift: `mesh ingest --pages`
rewrites them, and the test suite fails when a committed page differs from what the code generates. Below a
strategy page's generated block, its prose (when it tends to work, how it fails) is written by hand and kept."""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic.fields import FieldInfo

from meshtrader.persistence.knowledge_index import KnowledgeIndex, Section, SyncReport
from meshtrader.runtime.config import REPO_ROOT, Settings
from meshtrader.strategies import REGISTRY, builtin
from meshtrader.strategies.base import ShortLegParams, Strategy

KNOWLEDGE_DIR = "knowledge"
TOP_LEVEL_DOCS = ("README.md",)
SETTINGS_PAGE = Path(KNOWLEDGE_DIR) / "config" / "settings.md"
STRATEGIES_DIR = Path(KNOWLEDGE_DIR) / "strategies"
GENERATED_END = "<!-- end of the generated block: the text below is written by hand and kept -->"
SECTION_CHARS = 1800  # a longer section is cut at paragraphs (or table rows) so a hit points at the passage
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
COMMENT = re.compile(r"^\s*<!--.*-->\s*$")


# ----- sections --------------------------------------------------------------------------------------------
def slug(title: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def sections_of(path: str, text: str) -> list[Section]:
    """A Markdown document cut at its headings (not those inside code blocks); each section's title carries its
    parents' ("Futures > Funding"), and a long one is cut further at blank lines, each part keeping the address."""
    sections: list[Section] = []
    trail: list[tuple[int, str]] = []
    anchors: dict[str, int] = {}
    title, anchor, lines, fenced = "", "", [], ""  # fenced: the fence a code block opened with

    def close() -> None:
        body = "\n".join(lines).strip()
        if body or title:
            sections.extend(Section(path, anchor, title, part) for part in parts(body))

    for line in text.splitlines():
        if COMMENT.match(line):  # the generated pages' markers: for whoever edits the file, not for the reader
            continue
        if fence := FENCE.match(line):  # CommonMark: closed by the same character, at least as many times
            if not fenced:
                fenced = fence[1]
            elif fence[1].startswith(fenced) and not line.strip()[len(fence[1]):].strip():
                fenced = ""
        heading = None if fenced else HEADING.match(line)
        if heading is None:
            lines.append(line)
            continue
        close()
        level, name = len(heading[1]), heading[2].strip("` ")
        trail = [(lv, t) for lv, t in trail if lv < level] + [(level, name)]
        title = " > ".join(t for _, t in trail)
        base = slug(heading[2])
        seen = anchors.get(base, 0)
        anchors[base] = seen + 1
        anchor, lines = (f"{base}-{seen}" if seen else base), []
    close()
    return sections


def parts(body: str) -> list[str]:
    """A section's text in passages of about SECTION_CHARS, cut at blank lines or between table rows."""
    if len(body) <= SECTION_CHARS:
        return [body]
    pieces, current = [], ""
    for block in re.split(r"\n\s*\n|\n(?=\|)", body):
        if current and len(current) + len(block) > SECTION_CHARS:
            pieces.append(current.strip())
            current = ""
        current += block + "\n"
    if current.strip():
        pieces.append(current.strip())
    return pieces


def document_paths(root: Path = REPO_ROOT) -> list[Path]:
    """The documents the assistant knows: the README and every page of knowledge/."""
    found = [root / name for name in TOP_LEVEL_DOCS if (root / name).is_file()]
    return found + sorted((root / KNOWLEDGE_DIR).rglob("*.md"))


def texts(root: Path = REPO_ROOT) -> dict[str, str]:
    """Each document's text by its path relative to the repository."""
    return {path.relative_to(root).as_posix(): path.read_text() for path in document_paths(root)}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def digests(root: Path = REPO_ROOT) -> dict[str, str]:
    """Each document's content digest: enough to tell whether the index is current, without cutting them into
    sections (1.5 ms against 9 ms for the project's docs)."""
    return {name: digest(text) for name, text in texts(root).items()}


def documents(root: Path = REPO_ROOT) -> dict[str, tuple[str, list[Section]]]:
    """Each document's path (relative to the repository), content digest and sections."""
    return {name: (digest(text), sections_of(name, text)) for name, text in texts(root).items()}


def index_path(settings: Settings) -> Path:
    return settings.home_dir / "knowledge.db"


def ingest(settings: Settings, root: Path = REPO_ROOT) -> SyncReport:
    """Bring the index up to date with the documents: only the changed ones are indexed again."""
    with KnowledgeIndex(index_path(settings)) as index:
        return index.sync(documents(root))


# ----- generated pages -------------------------------------------------------------------------------------
def shown_value(value: Any) -> str:
    """A default as a person would type it in .env."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return str(value)


def kind_of(annotation: Any) -> str:
    """What a field takes, in words."""
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    arguments = [a for a in get_args(annotation) if a is not type(None)]
    if arguments and get_origin(annotation) not in (list, dict):
        return kind_of(arguments[0]) if len(arguments) == 1 else " or ".join(kind_of(a) for a in arguments)
    names = {int: "a whole number", float: "a number", Decimal: "an exact decimal", bool: "true or false",
             str: "text", Path: "a path", list: "a comma-separated list", dict: "JSON"}
    origin = get_origin(annotation) or annotation
    if inspect.isclass(origin) and issubclass(origin, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in origin)
    return names.get(origin, getattr(origin, "__name__", str(origin)))


def bounds_of(field: FieldInfo) -> str:
    """A field's limits, e.g. "> 0, ≤ 1"."""
    words = []
    for rule in field.metadata:
        for kind, sign in ((Gt, ">"), (Ge, "≥"), (Lt, "<"), (Le, "≤"), (MinLen, "length ≥"), (MaxLen, "length ≤")):
            if isinstance(rule, kind):
                words.append(f"{sign} {shown_value(getattr(rule, dataclasses.fields(rule)[0].name))}")
    return ", ".join(words)


def default_of(field: FieldInfo) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]


def settings_page() -> str:
    """knowledge/config/settings.md: one section per setting, from the settings model's own descriptions."""
    lines = ["# Settings", "",
             "Every setting of the mesh, generated from `meshtrader/runtime/config.py` (`mesh ingest --pages`). Each "
             "is set by its environment variable (or `.env`, or the TOML file named by `MESH_CONFIG`); credentials "
             "come only from the environment or `.env`. The README's \"Configuration\" section explains them by topic.",
             ""]
    for name, field in Settings.model_fields.items():
        variable = f"MESH_{name.upper()}"
        limits = bounds_of(field)
        lines += [f"## {variable}", "",
                  f"`{variable}`: {field.description}.".replace("..", "."), "",
                  f"- default: `{shown_value(default_of(field))}`",
                  f"- takes: {kind_of(field.annotation)}" + (f" ({limits})" if limits else ""), ""]
    return "\n".join(lines)


def hooks_of(cls: type[Strategy]) -> str:
    wanted = [what for hook, what in (("decide", "closed candles"), ("on_tick", "ticks"),
                                      ("on_funding", "funding rates")) if cls.wants(hook)]
    return ", ".join(wanted) or "nothing"


def strategy_block(name: str) -> str:
    """A strategy page's generated half: its rule (the module's docstring), parameters and search space."""
    cls = REGISTRY[name]
    module = inspect.getmodule(cls)
    rule = inspect.cleandoc(module.__doc__ or "").strip() if module else ""
    source = Path(inspect.getfile(cls)).relative_to(REPO_ROOT).as_posix()
    params = cls.Params.model_fields
    lines = [f"# Strategy: {name}", "",
             f"<!-- generated from {source} by `mesh ingest --pages`: edit the code, not this block -->", "",
             f"## {name}: the rule", "", rule, "",
             f"It reacts to {hooks_of(cls)}. Its code: `{source}`. Run it with `MESH_STRATEGIES={name}`; backtest it "
             f"with `mesh backtest --strategy {name}`.", ""]
    lines += [f"## {name}: parameters", ""]
    if params:
        lines += ["| parameter | default | takes | meaning |", "|---|---|---|---|"]
        for param, field in params.items():
            limits = bounds_of(field)
            takes = kind_of(field.annotation) + (f" ({limits})" if limits else "")
            lines.append(f"| `{param}` | `{shown_value(default_of(field))}` | {takes} | {field.description or ''} |")
        shown = [p for p in params if p != "short"][:1] or list(params)[:1]
        example = json.dumps({name: {p: default_of(params[p]) for p in shown}}, default=str)
        lines += ["", f"Set them with `MESH_STRATEGY_PARAMS='{example}'` (validated at start-up)."]
    else:
        lines.append("It takes no parameters.")
    lines.append("")
    if cls.search_space:
        space = "; ".join(f"`{p}` in {', '.join(map(str, values))}" for p, values in cls.search_space.items())
        lines += [f"Parameter optimisation (`mesh validate --optimize`) searches: {space}.", ""]
    short = issubclass(cls.Params, ShortLegParams)
    lines += [f"Short leg under USD-M futures (`MESH_MARKET=usdm`): "
              f"{'yes, with the parameter `short`' if short else 'no: it only buys and sells'}.", "",
              GENERATED_END, ""]
    return "\n".join(lines)


def strategy_page(name: str, current: str | None) -> str:
    """The page with its generated block renewed and the hand-written text below it kept."""
    kept = current.split(GENERATED_END, 1)[1].lstrip("\n") if current and GENERATED_END in current else current or ""
    return strategy_block(name) + "\n" + (kept or "## When it tends to work\n\n(not written yet)\n")


def generated_pages(root: Path = REPO_ROOT) -> dict[Path, str]:
    """What each generated page must hold, given the code and the pages' hand-written parts."""
    pages = {root / SETTINGS_PAGE: settings_page()}
    for name in builtin():
        path = root / STRATEGIES_DIR / f"{name}.md"
        pages[path] = strategy_page(name, path.read_text() if path.is_file() else None)
    return pages


def stale_pages(root: Path = REPO_ROOT) -> list[Path]:
    """The generated pages that differ from what the code generates now."""
    return [path for path, text in generated_pages(root).items()
            if not path.is_file() or path.read_text() != text]


def write_pages(root: Path = REPO_ROOT) -> list[Path]:
    """Rewrite the generated pages that are stale; returns them."""
    written = []
    for path, text in generated_pages(root).items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written
