"""YAML -> typed dataclasses, once, at the edge. Library code takes the dataclasses, never files.

Overrides use dotted keys: ``train.max_epochs=3 model.hidden=64``; values are parsed as YAML
scalars (``yaml.safe_load``: never ``eval``).

Every value is checked against the type its dataclass field declares, by pydantic (lax mode: a
YAML ``"10"`` or ``1e-3`` string becomes the declared int or float, ``"ten"`` does not). The scheme
is driven by the dataclasses alone: a field added to any config dataclass is checked with no
further code. A bad value raises :class:`ConfigError` (a ``ValueError``, so the CLI exits 2) that
names the key, the value and the declared type.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that does not fit its declared type, an unknown key or a missing required key."""


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML scalars)."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[parts[-1]] = raw  # not a YAML scalar: keep the text, the type check judges it
    return out


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every value against its declared type.

    Nested dataclasses, ``X | None``, unions, lists, tuples and dicts are checked all the way down;
    missing fields take their defaults. Unknown keys, missing required keys and values of the wrong
    type raise :class:`ConfigError` naming each key (dotted), its value and the expected type.
    """
    from pydantic import ValidationError

    try:
        return _adapter(cls).validate_python({} if data is None else data)
    except ValidationError as exc:
        raise ConfigError(_describe(cls, exc, where or cls.__name__)) from None


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


@functools.cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    _configure(cls)
    return TypeAdapter(cls)


def _configure(cls: type) -> None:
    """Give ``cls`` and every dataclass reachable from its fields pydantic's settings for configs.

    ``extra="forbid"``: a misspelt key is an error, not silently ignored. Numbers are accepted where
    a string is declared (``run_name: 2024``). A dataclass that sets its own ``__pydantic_config__``
    keeps it.
    """
    from pydantic import ConfigDict

    seen: set[type] = set()
    stack: list[Any] = [cls]
    while stack:
        hint = stack.pop()
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            if hint in seen:
                continue
            seen.add(hint)
            if "__pydantic_config__" not in hint.__dict__:
                hint.__pydantic_config__ = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
            stack.extend(typing.get_type_hints(hint).values())
        else:
            stack.extend(typing.get_args(hint))


def _describe(cls: type, exc: Any, where: str) -> str:
    """One line per bad key: ``where: key: got VALUE, expected TYPE (pydantic's reason)``."""
    lines: dict[str, str] = {}
    for err in exc.errors():
        key, hint, known = _walk(cls, err["loc"])
        if key in lines:  # a union reports one error per member: keep the first, the type names them all
            continue
        kind = err["type"]
        if kind in ("unexpected_keyword_argument", "extra_forbidden"):
            lines[key] = f"{key}: unknown key (value {err['input']!r}); known keys here: {sorted(known)}"
        elif kind == "missing":
            lines[key] = f"{key}: required key missing (expected {_type_name(hint)})"
        else:
            lines[key] = f"{key}: got {err['input']!r}, expected {_type_name(hint)} ({err['msg']})"
    return f"config {where}: " + "; ".join(lines.values())


def _walk(cls: type, loc: tuple) -> tuple[str, Any, list[str]]:
    """Follow pydantic's error location through the declared types.

    Returns the user's dotted key (without pydantic's union-member tags), the declared type at that
    key and the field names of the innermost dataclass (for "unknown key" messages).
    """
    hint: Any = cls
    parts: list[str] = []
    known: list[str] = []
    for item in loc:
        hint = _strip_optional(hint)
        if dataclasses.is_dataclass(hint):
            fields = typing.get_type_hints(hint)
            known = list(fields)
            parts.append(str(item))
            hint = fields.get(str(item), Any)
        elif typing.get_origin(hint) in (list, tuple, set) and isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            args = typing.get_args(hint)
            hint = args[0] if args else Any
        elif typing.get_origin(hint) is dict:
            parts.append(str(item))
            args = typing.get_args(hint)
            hint = args[1] if len(args) == 2 else Any
        elif _is_union(hint):
            # pydantic tags a union member's error with the member's name: skip the tag, keep the union
            continue
        else:
            parts.append(str(item))
            hint = Any
    return ".".join(parts) or "(top level)", hint, known


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _strip_optional(hint: Any) -> Any:
    """``X | None`` -> ``X``; other unions and plain types unchanged."""
    if _is_union(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_name(hint: Any) -> str:
    if hint is Any:
        return "any value"
    if isinstance(hint, type) and not typing.get_args(hint):
        return "a mapping of " + hint.__name__ if dataclasses.is_dataclass(hint) else hint.__name__
    # "list[forecast.sim.sumo.NetworkConfig]" -> "list[NetworkConfig]"
    return re.sub(r"(?:\w+\.)+(\w+)", r"\1", str(hint)).replace("NoneType", "None")
