"""Typed configuration: schema helpers and the per-node config trees."""

from vla_ros.config.files import dump_params, load_config, read_params_file
from vla_ros.config.schema import (FieldSpec, ParamMeta, apply_changes, flatten, from_flat,
                                   iter_fields, param, section)

__all__ = ["FieldSpec", "ParamMeta", "apply_changes", "dump_params", "flatten", "from_flat",
           "iter_fields", "load_config", "param", "read_params_file", "section"]
