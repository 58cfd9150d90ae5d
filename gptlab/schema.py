"""Config schemas: a dataclass per config section, built from a mapping by one function that checks it.

    from_mapping(cls, values, group)   dataclass ``cls`` from a config mapping (a YAML section, a Hydra node
                                       as a dict, a checkpoint's stored config); sections typed as dataclasses
                                       are built the same way, one level down
    at_least(name, value, low)         the range check the dataclasses' ``__post_init__`` share

Every mistake is one :class:`UserError` line that names the key: an unknown key lists the valid ones, a value
of the wrong type says which type is wanted (``optim.lr must be a number, got 'abc'``). Ranges and choices are
the dataclass's own business (its ``__post_init__``), so a dataclass built directly in Python is checked too.

A field may say in what words its type is asked for (``field(metadata={"expected": "a non-negative
integer"})``), so its type error and its range error read the same. An integer given for a float field becomes
a float. This module imports nothing of the project but gptlab.errors: every layer may use it
(docs/architecture.md, "Config schemas").
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from gptlab.errors import UserError

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def at_least(name: str, value: int, low: int, extra: str = "") -> None:
    """``name must be a positive integer`` (low 1) or ``an integer >= low``, with ``extra`` after it."""
    if value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise UserError(f"{name} must be {what}{' ' + extra if extra else ''}, got {value!r}")


def _fits(value: Any, t: Any) -> bool:
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t is str:
        return isinstance(value, str)
    return False


def type_error(value: Any, hint: Any, expected: str | None = None) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (int, float, bool, str, X | None, Any), or None.
    ``expected`` words the wanted type (a field's ``metadata["expected"]``)."""
    if hint is Any:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        return f"must be {expected}" if expected else "must not be null"
    if any(_fits(value, t) for t in options):
        return None
    wanted = expected or " or ".join(_NAMES.get(t, "null") for t in options)
    return f"must be {wanted}"


def from_mapping(cls, values: Mapping, group: str = ""):
    """Build dataclass ``cls`` from ``values``: unknown keys and mistyped values get one line each.

    ``group`` is the section's dotted name in messages (``train``; ``""`` for the top level). A field whose
    type is a dataclass is a section: its value must be a mapping, built by this function with group
    ``group.key``. Keys left out take the field's default. A dataclass that renamed a field lists
    ``RENAMED = {old: new}`` (a ClassVar): a mapping saved under the old name still loads."""
    where = group or "the config"
    if not isinstance(values, Mapping):
        raise UserError(f"{where} must be a section of key: value lines, got {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    values = dict(values)
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old in values and old not in known:
            value = values.pop(old)
            if values.get(new) is None:
                values[new] = value
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        raise UserError(f"unknown key(s) {unknown} in {where}; valid keys: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    expected = {f.name: f.metadata.get("expected") for f in dataclasses.fields(cls)}
    built = {}
    for key, value in values.items():
        name, hint = f"{group}.{key}" if group else key, hints[key]
        if dataclasses.is_dataclass(hint):
            built[key] = from_mapping(hint, value, name)
            continue
        problem = type_error(value, hint, expected[key])
        if problem:
            raise UserError(f"{name} {problem}, got {value!r}")
        floats = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if float in floats and int not in floats and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # `optim.lr=1` is the number 1.0: the dataclass holds what it declares
        built[key] = value
    return cls(**built)
