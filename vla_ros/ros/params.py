"""Mirror a typed config tree as ROS parameters, validated all-or-nothing on every change.

Parameter names are the dotted field paths. The on-set callback only validates (the whole
proposed tree, so a batch is never half-applied); the post-set callback rebuilds the same tree
and swaps one reference, so a loop that reads `binding.current` once per cycle never sees half
a change. Non-dynamic fields are declared read-only: they need a restart.
"""

from __future__ import annotations

import sys
import threading
import typing
from typing import Any, Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from vla_ros.config.schema import FieldSpec, apply_changes, flatten, from_flat, iter_fields
from vla_ros.errors import ConfigError

_SCALAR_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                 float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {bool: ParameterType.PARAMETER_BOOL_ARRAY, int: ParameterType.PARAMETER_INTEGER_ARRAY,
                float: ParameterType.PARAMETER_DOUBLE_ARRAY, str: ParameterType.PARAMETER_STRING_ARRAY}
_EMPTY_TYPES = {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}


def _descriptor(spec: FieldSpec) -> ParameterDescriptor:
    meta = spec.meta
    text = meta.description
    if meta.choices:
        text += f" One of: {', '.join(meta.choices)}."
    if not meta.dynamic:
        text += " (restart required to change)"
    # dynamic_typing: rclpy's own type check answers "Wrong parameter type, expected '3' got '4'";
    # with it off, the schema checks the type in the on-set callback and names it ("expected a number,
    # got 'fast'"), and an integer given for a float (`ros2 param set ... rate 50`) is accepted.
    desc = ParameterDescriptor(name=spec.name, description=text, read_only=not meta.dynamic, dynamic_typing=True)
    if typing.get_origin(spec.type) is tuple:
        desc.type = _ARRAY_TYPES[typing.get_args(spec.type)[0]]
        return desc
    desc.type = _SCALAR_TYPES[spec.type]
    if meta.range is not None and spec.type is float:
        desc.floating_point_range = [FloatingPointRange(from_value=float(meta.range[0]),
                                                        to_value=float(meta.range[1]), step=0.0)]
    elif meta.range is not None and spec.type is int:
        desc.integer_range = [IntegerRange(from_value=int(meta.range[0]), to_value=int(meta.range[1]), step=1)]
    return desc


def _to_python(value: Any) -> Any:
    """rclpy hands arrays back as lists or array.array; the schema wants plain sequences."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return list(value)


def params_files(argv: list[str]) -> list[str]:
    """The --params-file arguments of a ROS command line (what launch passes a node)."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--params-file"]


def _warn_if_no_section(node: Node) -> None:
    """A params file with no section for this node (nor '/**') leaves every parameter at its
    built-in default: say so, or a typo in a node name goes unnoticed."""
    files = params_files(sys.argv)
    if files and not getattr(node, "_parameter_overrides", {"unknown": None}):
        node.get_logger().warning(f"no parameters for {node.get_fully_qualified_name()} in {files} (no section "
                                  "with its name nor '/**'): every parameter has its built-in default")


class ParamBinding:
    """Declares every field of `config` on `node` and keeps `current` in step with the parameters.

    The initial values are `config` overlaid with any parameter overrides the node was started
    with (params file, launch, command line); an invalid start-up value raises ConfigError.
    `on_change(old, new)` runs after a validated change has been applied.
    """

    def __init__(self, node: Node, config: Any,
                 on_change: Callable[[Any, Any], None] | None = None) -> None:
        self._node = node
        self._cls = type(config)
        self._specs = {s.name: s for s in iter_fields(self._cls)}
        self._on_change = on_change
        self._lock = threading.Lock()
        defaults = flatten(config)
        values: dict[str, Any] = {}
        for name, spec in self._specs.items():
            default = defaults[name]
            initial = _EMPTY_TYPES[typing.get_args(spec.type)[0]] if default == () else \
                (list(default) if isinstance(default, tuple) else default)
            descriptor = _descriptor(spec)
            descriptor.dynamic_typing = default != ()  # rclpy declares an empty array by its type only
            try:
                param = node.declare_parameter(name, initial, descriptor)
            except ParameterException as err:  # wrong type in a params file, out of range, ...
                raise ConfigError(f"parameter {name}: {err}") from err
            value = _to_python(param.value)
            values[name] = default if value is None else value
        self._current = from_flat(self._cls, values)
        _warn_if_no_section(node)
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._apply)

    @property
    def current(self) -> Any:
        """The latest validated config (a frozen tree: read it once per cycle)."""
        return self._current

    def _changes(self, params: list[Parameter]) -> dict[str, Any]:
        return {p.name: _to_python(p.value) for p in params if p.name in self._specs}

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        changes = self._changes(params)
        if not changes:
            return SetParametersResult(successful=True)
        try:
            apply_changes(self._current, changes)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Parameter]) -> None:
        changes = self._changes(params)
        if not changes:
            return
        with self._lock:
            old = self._current
            self._current = apply_changes(old, changes)
        if self._on_change is not None:
            self._on_change(old, self._current)
