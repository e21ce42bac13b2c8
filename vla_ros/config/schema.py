"""Typed config trees: frozen dataclasses whose fields carry ROS-parameter metadata.

A field declared with `param(...)` knows its description (with unit), its allowed range or
choices and whether it may change at run time. The same tree is loaded from a ROS params
YAML file, mirrored as ROS parameters (dotted field paths are the parameter names) and
changed all-or-nothing: `apply_changes` validates the whole proposed tree before anyone sees it.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Iterator

from vla_ros.errors import ConfigError

_META_KEY = "vla_ros"
SCALAR_TYPES = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class ParamMeta:
    description: str
    range: tuple[float, float] | None = None  # inclusive bounds for numbers (each element of arrays)
    choices: tuple[str, ...] | None = None  # allowed strings
    dynamic: bool = False  # may change while the node runs


def param(default: Any, description: str, *, range: tuple[float, float] | None = None,
          choices: tuple[str, ...] | None = None, dynamic: bool = False) -> Any:
    """A dataclass field with its parameter metadata; tuples are fine as defaults (immutable)."""
    meta = ParamMeta(description, range, choices, dynamic)
    return dataclasses.field(default=default, metadata={_META_KEY: meta})


def section(cls: type) -> Any:
    """A nested config section defaulting to the section's own defaults."""
    return dataclasses.field(default_factory=cls)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str  # dotted path
    type: Any  # bool, int, float, str, tuple[float, ...], tuple[str, ...], tuple[int, ...]
    default: Any
    meta: ParamMeta


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def iter_fields(cls: type, prefix: str = "") -> Iterator[FieldSpec]:
    """Every leaf parameter of a config class, depth first, with dotted names."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if _is_section(tp):
            yield from iter_fields(tp, prefix=name + ".")
            continue
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} must be declared with param() or section()")
        yield FieldSpec(name, tp, f.default, meta)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted name: value} for every leaf of a config instance."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, prefix=f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _coerce(spec: FieldSpec, value: Any) -> Any:
    """Convert a YAML/ROS value to the field's type, checking type, range and choices."""
    tp, name = spec.type, spec.name
    origin = typing.get_origin(tp)
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ConfigError(f"{name}: expected a list of {elem.__name__}, got {value!r}")
        return tuple(_coerce(FieldSpec(f"{name}[{i}]", elem, None, spec.meta), v)
                     for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be finite, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        if spec.meta.choices is not None and value not in spec.meta.choices:
            raise ConfigError(f"{name}: {value!r} is not one of {list(spec.meta.choices)}")
        return value
    else:
        raise TypeError(f"{name}: unsupported parameter type {tp}")
    lo_hi = spec.meta.range
    if lo_hi is not None and not (lo_hi[0] <= value <= lo_hi[1]):
        raise ConfigError(f"{name}: {value} is outside the allowed range [{lo_hi[0]}, {lo_hi[1]}]")
    return value


def _build(cls: type, flat: dict[str, Any], prefix: str = "") -> Any:
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if _is_section(tp):
            kwargs[f.name] = _build(tp, flat, prefix=name + ".")
        elif name in flat:
            kwargs[f.name] = flat[name]
    try:
        return cls(**kwargs)  # __post_init__ runs the cross-field rules
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


def from_flat(cls: type, values: dict[str, Any], base: Any = None) -> Any:
    """Build a validated config from {dotted name: value}; unset fields come from `base` or defaults.

    Unknown names are errors that list the valid ones (a typo must never fall back to a default).
    """
    specs = {s.name: s for s in iter_fields(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for {cls.__name__}; valid: {sorted(specs)}")
    flat = flatten(base) if base is not None else {}
    for name, value in values.items():
        flat[name] = _coerce(specs[name], value)
    return _build(cls, flat)


def apply_changes(current: Any, changes: dict[str, Any], *, allow_static: bool = False) -> Any:
    """A new config with `changes` applied, validated as a whole; `current` is never modified."""
    if not allow_static:
        specs = {s.name: s for s in iter_fields(type(current))}
        fixed = sorted(n for n in changes if n in specs and not specs[n].meta.dynamic
                       and changes[n] != getattr_dotted(current, n))
        if fixed:
            raise ConfigError(f"parameter(s) {fixed} cannot change while the node runs (restart required)")
    return from_flat(type(current), changes, base=current)


def getattr_dotted(cfg: Any, name: str) -> Any:
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}} (the ROS params YAML form)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return out


def unnest(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of nest; also accepts already-dotted keys."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(unnest(value, prefix=name + "."))
        else:
            out[name] = value
    return out
