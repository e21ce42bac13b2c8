"""Config trees <-> ROS 2 params YAML files (`<node>: {ros__parameters: {...}}`).

The same file serves `ros2 launch` (passed as a parameters file) and the Python entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vla_ros.config.schema import flatten, from_flat, nest, unnest
from vla_ros.errors import ConfigError


def read_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """{node name: {dotted parameter: value}} from a ROS params YAML file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: expected a mapping of node names, got {type(doc).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for node, body in doc.items():
        node = str(node).lstrip("/")
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise ConfigError(f"config file {path}: node {node!r} needs a 'ros__parameters' mapping")
        out[node] = unnest(body["ros__parameters"] or {})
    return out


def nodes_without_section(path: str | Path, nodes: list[str]) -> list[str]:
    """The nodes of `nodes` that a params file gives no section (and no '/**' section either)."""
    params = read_params_file(path)
    if "**" in params:
        return []
    return [node for node in nodes if node.lstrip("/") not in params]


def load_config(path: str | Path, node: str, cls: type, overrides: dict[str, Any] | None = None) -> Any:
    """The validated config of `node` from a params file ('/**' applies to every node)."""
    params = read_params_file(path)
    values = dict(params.get("**", {}))
    values.update(params.get(node, {}))
    values.update(overrides or {})
    try:
        return from_flat(cls, values)
    except ConfigError as err:
        raise ConfigError(f"{path} [{node}]: {err}") from err


def dump_params(configs: dict[str, Any]) -> str:
    """YAML text for {node name: config instance}."""
    doc = {node: {"ros__parameters": nest(flatten(cfg))} for node, cfg in configs.items()}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
