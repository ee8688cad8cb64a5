"""Strategy registry: name -> class.

A strategy is one file. Every module of this package is imported when the package is (found with
pkgutil: there is no list to keep), and each class it decorates with `@register` is known by its name.
Strategies in files outside the package come in through `load_files` (the `MESH_STRATEGY_FILES`
setting calls it, so every process of the mesh, `mesh backtest` and the optimiser's workers know them).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path

from meshtrader.strategies.base import REGISTRY, Decision, ParameterError, Strategy, StrategyParams, register

PACKAGE_PREFIX = __name__ + "."
FILE_MODULE_PREFIX = "meshtrader_strategy_file_"  # modules loaded from MESH_STRATEGY_FILES
_loaded_files: dict[Path, list[str]] = {}


def _discover() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(PACKAGE_PREFIX + module.name)


_discover()


def create(name: str, symbol: str, params: dict | None = None) -> Strategy:
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ParameterError(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}") from None
    return cls(symbol, params)


def known() -> list[str]:
    """Every registered strategy's name: the package's and those loaded from files."""
    return list(REGISTRY)


def builtin() -> list[str]:
    """The strategies this package defines (the README lists them)."""
    return [name for name, cls in REGISTRY.items() if cls.__module__.startswith(PACKAGE_PREFIX)]


def load_files(paths: Iterable[str | Path]) -> list[str]:
    """Import strategy modules from .py files outside the package; each must `@register` a strategy.

    A file already loaded is not loaded again. Returns the names the files define; a file that cannot
    be imported, or defines no strategy or one whose name is taken, raises ParameterError."""
    names: list[str] = []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if path not in _loaded_files:
            _loaded_files[path] = _load_file(path)
        names.extend(_loaded_files[path])
    return names


def _load_file(path: Path) -> list[str]:
    if path.suffix != ".py" or not path.is_file():
        raise ParameterError(f"strategy file {path}: not a readable .py file")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    module_name = f"{FILE_MODULE_PREFIX}{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ParameterError(f"strategy file {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before running it: pydantic resolves its annotations through it
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # whatever the file does wrong, the setting names it in one line
        _forget(module_name)
        raise ParameterError(f"strategy file {path}: {type(error).__name__}: {error}") from None
    names = [name for name, cls in REGISTRY.items() if cls.__module__ == module_name]
    if not names:
        _forget(module_name)
        raise ParameterError(f"strategy file {path} registers no strategy: decorate its Strategy class with "
                             "@register (from meshtrader.strategies import register)")
    return names


def _forget(module_name: str) -> None:
    sys.modules.pop(module_name, None)
    for name in [n for n, cls in REGISTRY.items() if cls.__module__ == module_name]:
        del REGISTRY[name]


__all__ = ["Decision", "ParameterError", "Strategy", "StrategyParams", "REGISTRY", "builtin", "create", "known",
           "load_files", "register"]
