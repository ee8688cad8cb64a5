"""The folder tree is the architecture: each subpackage of meshtrader imports only from its own layer or
the layers below it (the order the README's "Layout" section gives), and SQL lives in persistence only."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "meshtrader"
# bottom to top: a module may import from its own layer and from those before it
LAYERS = ("wire", "domain", "strategies", "runtime", "bus", "persistence", "marketdata", "execution", "venues",
          "forks", "research", "ops", "assistant", "dashboard", "services")
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b",
                 re.IGNORECASE | re.DOTALL)


def modules() -> list[tuple[str, Path]]:
    """(layer, file) for every module inside a subpackage."""
    return [(path.relative_to(PACKAGE).parts[0], path) for path in sorted(PACKAGE.rglob("*.py"))
            if len(path.relative_to(PACKAGE).parts) > 1]


def imported_layers(path: Path) -> list[tuple[str, int]]:
    """The meshtrader subpackages a module imports, wherever the import statement stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "meshtrader" and len(parts) > 1:
                found.append((parts[1], node.lineno))
    return found


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages == set(LAYERS)


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} imports meshtrader.{theirs} ({layer} is below it)"
              for layer, path in modules() for theirs, line in imported_layers(path)
              if LAYERS.index(theirs) > LAYERS.index(layer)]
    assert not upward, "\n".join(upward)


def test_sql_lives_in_the_persistence_layer_only():
    strings_with_sql = []
    for layer, path in modules():
        if layer == "persistence":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                strings_with_sql.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not strings_with_sql, "SQL outside meshtrader/persistence: " + ", ".join(strings_with_sql)
