"""Config schemas: a dataclass per config section, built from a mapping by one function that checks it.

    from_mapping(cls, values, group)   dataclass ``cls`` from a config mapping (a YAML section, a Hydra node,
                                       a checkpoint's stored config); sections typed as dataclasses are built
                                       the same way, one level down
    at_least(name, value, low)         the range check the dataclasses' ``__post_init__`` share
    count(default, low, note)          a field holding an integer >= low; check_counts(self) checks them all
    text(default)                      a field holding text: a number or a path given for it becomes its text
    refuse(obj, key, value)            the field's own line for a value it does not take (``__post_init__``)

Every mistake is one :class:`UserError` line that names the key: an unknown key lists the valid ones, a value
of the wrong type says which type is wanted (``optim.lr must be a number, got 'abc'``). Ranges and choices are
the dataclass's own business (its ``__post_init__``), so a dataclass built directly in Python is checked too.

How a schema words its lines, where the defaults do not fit its tool:

- field metadata ``"expected"``: the wanted type in words (``field(metadata={"expected": "a non-negative
  integer"})``), so the type error and the range error read the same (``seed must be a non-negative integer,
  got 'abc'``);
- field metadata ``"error"``: the whole line, a template of ``{name}`` and ``{value}``, for a tool whose lines
  read ``port=99999 must be ...``; ``refuse`` gives the same line for a value out of range;
- field metadata ``"text"``: a number or a path given for the field is taken as its text (Hydra reads
  ``run=2024`` as the number 2024);
- ``UNKNOWN_KEYS`` (a ClassVar): the unknown-key line, a template of ``{unknown}``, ``{where}`` and ``{valid}``.

An integer given for a float field becomes a float. A Hydra/OmegaConf config is read as plain dicts and lists,
interpolations resolved. This module imports nothing of the project but gptlab.errors: every layer may use it
(docs/architecture.md, "Config schemas").
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any

from gptlab.errors import UserError

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}
UNKNOWN_KEYS = "unknown key(s) {unknown} in {where}; valid keys: {valid}"


def at_least(name: str, value: int, low: int, extra: str = "") -> None:
    """``name must be a positive integer`` (low 1) or ``an integer >= low``, with ``extra`` after it."""
    if value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise UserError(f"{name} must be {what}{' ' + extra if extra else ''}, got {value!r}")


def count(default: int | None, low: int, note: str = "", **metadata: Any) -> Any:
    """A field holding an integer >= ``low`` (or None, where its type allows): a wrong type and a value below
    ``low`` both read ``<name> must be an integer >= <low><note>, got <value!r>`` (or the field's "error"
    template); the dataclass's ``__post_init__`` calls :func:`check_counts`."""
    return dataclasses.field(
        default=default, metadata={"expected": f"an integer >= {low}{note}", "low": low, **metadata}
    )


def text(default: str | None = None, **metadata: Any) -> Any:
    """A field holding text (a path, a name, free text): a number or a path object given for it is its text."""
    return dataclasses.field(default=default, metadata={"text": True, **metadata})


def refuse(obj: Any, key: str, value: Any, name: str | None = None) -> UserError:
    """The line for a value of field ``key`` that the field does not take, in the field's words: its "error"
    template, else ``<name> must be <expected>, got <value!r>``. ``name`` is the key as messages name it
    (``probe.batch_size`` for a section's field)."""
    meta = next(f.metadata for f in dataclasses.fields(obj) if f.name == key)
    name = name or key
    if "error" in meta:
        return UserError(meta["error"].format(name=name, value=value))
    return UserError(f"{name} must be {meta['expected']}, got {value!r}")


def check_counts(obj: Any, group: str = "") -> None:
    """Every :func:`count` field of dataclass ``obj`` is at least its ``low`` (None passes: its type said
    whether it may be None)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if "low" in f.metadata and value is not None and value < f.metadata["low"]:
            raise refuse(obj, f.name, value, f"{group}.{f.name}" if group else f.name)


def _fits(value: Any, t: Any) -> bool:
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t is str:
        return isinstance(value, str)
    if t is list or typing.get_origin(t) is list:
        (item,) = typing.get_args(t) or (Any,)
        return isinstance(value, list) and (item is Any or all(_fits(v, item) for v in value))
    return False


def _name(t: Any) -> str:
    return _NAMES.get(typing.get_origin(t) or t, "null")


def type_error(value: Any, hint: Any, expected: str | None = None) -> str | None:
    """Why ``value`` does not fit the annotation ``hint`` (int, float, bool, str, list[X], X | None, Any), or
    None. ``expected`` words the wanted type (a field's ``metadata["expected"]``)."""
    if hint is Any:
        return None
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        return f"must be {expected}" if expected else "must not be null"
    if any(_fits(value, t) for t in options):
        return None
    wanted = expected or " or ".join(_name(t) for t in options)
    return f"must be {wanted}"


def _plain(values: Any) -> Any:
    """A Hydra/OmegaConf config as plain dicts and lists (interpolations resolved); anything else as it is."""
    if isinstance(values, dict | list) or not type(values).__module__.startswith("omegaconf"):
        return values
    from omegaconf import OmegaConf

    return OmegaConf.to_container(values, resolve=True)


def from_mapping(cls, values: Mapping, group: str = ""):
    """Build dataclass ``cls`` from ``values``: unknown keys and mistyped values get one line each.

    ``group`` is the section's dotted name in messages (``train``; ``""`` for the top level). A field whose
    type is a dataclass is a section: its value must be a mapping, built by this function with group
    ``group.key``. Keys left out take the field's default. A dataclass that renamed a field lists
    ``RENAMED = {old: new}`` (a ClassVar): a mapping saved under the old name still loads. The lines' words
    come from the class and its fields where they say (the module's docstring)."""
    where = group or "the config"
    values = _plain(values)
    if not isinstance(values, Mapping):
        raise UserError(f"{where} must be a section of key: value lines, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(values)
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old in values and old not in fields:
            value = values.pop(old)
            if values.get(new) is None:
                values[new] = value
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        template = getattr(cls, "UNKNOWN_KEYS", UNKNOWN_KEYS)
        raise UserError(template.format(unknown=unknown, where=where, valid=", ".join(fields)))
    hints = typing.get_type_hints(cls)
    built = {}
    for key, value in values.items():
        name, hint, meta = f"{group}.{key}" if group else key, hints[key], fields[key].metadata
        if dataclasses.is_dataclass(hint):
            built[key] = from_mapping(hint, value, name)
            continue
        if meta.get("text") and isinstance(value, int | float | os.PathLike):
            value = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        problem = type_error(value, hint, meta.get("expected"))
        if problem:
            if "error" in meta:
                raise refuse(cls, key, value, name)
            raise UserError(f"{name} {problem}, got {value!r}")
        floats = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if float in floats and int not in floats and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # `optim.lr=1` is the number 1.0: the dataclass holds what it declares
        built[key] = value
    return cls(**built)
