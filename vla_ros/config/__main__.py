"""`python -m vla_ros.config --markdown docs/parameters.md` writes the parameter reference;
`python -m vla_ros.config --defaults` prints every node's defaults as a ROS params file."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from vla_ros.config.files import dump_params
from vla_ros.config.nodes import NODE_CONFIGS, config_class
from vla_ros.config.schema import iter_fields


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"{typing.get_args(tp)[0].__name__}[]"
    return tp.__name__


def markdown() -> str:
    lines = ["# Parameters", "",
             "Generated from the config classes by `python -m vla_ros.config --markdown docs/parameters.md`; "
             "a test keeps it current. Live: the parameter can change while the node runs "
             "(`ros2 param set`); the others need a restart. Every change is validated against the whole "
             "config (ranges, choices, types named in the answer, cross-field rules) and refused with the "
             "reason, nothing changed.", "",
             "Several values at once: `ros2 param set` and a plain `set_parameters` request apply their "
             "values one at a time (a bad one is refused, the good ones before and after it are applied). "
             "To change several values all-or-nothing, call the node's `set_parameters_atomically` "
             "service, e.g. `ros2 service call /safety_node/set_parameters_atomically "
             "rcl_interfaces/srv/SetParametersAtomically \"{parameters: [{name: control_rate_hz, value: "
             "{type: 3, double_value: 100.0}}, {name: blend.mode, value: {type: 4, string_value: "
             "newest}}]}\"` (type 3 = double, 4 = string, 2 = integer, 1 = bool); from Python, "
             "`rclpy.parameter_client.AsyncParameterClient.set_parameters_atomically`.", ""]
    for node in NODE_CONFIGS:
        lines += [f"## {node}", "", "| parameter | type | default | range / choices | live | description |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for spec in iter_fields(config_class(node)):
            meta = spec.meta
            allowed = (" / ".join(meta.choices) if meta.choices else
                       f"[{meta.range[0]:g}, {meta.range[1]:g}]" if meta.range else "")
            default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            text = meta.description.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{spec.name}` | {_type_name(spec.type)} | `{default}` | {allowed} | "
                         f"{'yes' if meta.dynamic else ''} | {text} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", type=Path, help="write the parameter reference here")
    parser.add_argument("--defaults", action="store_true", help="print all nodes' defaults as YAML")
    args = parser.parse_args()
    if args.markdown:
        args.markdown.write_text(markdown())
    if args.defaults:
        print(dump_params({node: config_class(node)() for node in NODE_CONFIGS}), end="")


if __name__ == "__main__":
    main()
