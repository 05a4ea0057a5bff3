"""Which source files of ``forecast`` a pipeline step runs, and their content hashes.

A step names its entry modules (``Step.code``, e.g. ``("forecast.training.train",)``); the files it
runs are those modules plus every ``forecast`` module they import, directly or not, at module level
or inside a function (a lazy import runs too), plus the packages' ``__init__.py`` files on the way.
The imports are read with :mod:`ast`, not by importing, so this is cheap and has no side effects.

The runner hashes the files' contents into the step's hash, so editing ``forecast/model/rollout.py``
makes train, evaluate and export stale while simulate and ingest stay done. The pipeline's own
plumbing (``runner``, ``steps``, ``workdir``) is not part of any step's code: it decides where
outputs go, not what they contain.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

import forecast

PACKAGE = "forecast"
PACKAGE_DIR = Path(forecast.__file__).resolve().parent


def module_file(name: str, root: Path | None = None) -> Path | None:
    """``forecast.model.rollout`` -> ``<root>/model/rollout.py`` (or the package's ``__init__.py``); None if absent.

    ``root`` is the ``forecast`` package directory (default: the imported package's).
    """
    root = root or PACKAGE_DIR
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path, name: str, root: Path) -> set[str]:
    """Names of the ``forecast`` modules that the file of module ``name`` imports, anywhere in it."""
    st = path.stat()
    return _parsed_imports(path, name, root, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def _parsed_imports(path: Path, name: str, root: Path, mtime_ns: int, size: int) -> frozenset[str]:
    """:func:`_imported`, parsed once per file version (a plan reads the same files for several steps)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            out.add(base)
            # ``from forecast.model import rollout`` imports a module, not a name
            out.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}", root))
    return frozenset(out)


def code_modules(entries: tuple[str, ...] | list[str], root: Path | None = None) -> list[str]:
    """Every ``forecast`` module that running ``entries`` can execute (sorted), parents' ``__init__`` included."""
    root = root or PACKAGE_DIR
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
        todo.extend(_imported(path, name, root))
    return sorted(seen)


def code_files(entries: tuple[str, ...] | list[str], root: Path | None = None) -> dict[str, str]:
    """``{path relative to the package's parent: sha256 of the file}`` for the code of ``entries``."""
    root = root or PACKAGE_DIR
    out = {}
    for name in code_modules(entries, root):
        path = module_file(name, root)
        assert path is not None
        out[str(path.relative_to(root.parent))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def files_hash(files: dict[str, str]) -> str:
    """One sha256 over a :func:`code_files` mapping (empty mapping: empty string, so steps without code keep it out)."""
    if not files:
        return ""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
