"""Command line: python -m vla_ros.training.train --dataset DIR [--dataset DIR2 ...] --output DIR --model tiny ...

Every TrainConfig field is a flag (`--batch-size` for batch_size, `--no-progress` for a bool); `--config FILE`
starts from a saved train_config.json. `--resume` continues the run in --output from its latest checkpoint
(`--resume CHECKPOINT_DIR` from a given one) with the run's saved settings; flags given with it must agree
except save_every, keep_last_checkpoints, log_every, num_workers, frame_cache_mb and progress.
Several GPUs: `torchrun --nproc-per-node N -m vla_ros.training.train ...` (or `accelerate launch`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vla_ros.config.schema import iter_fields
from vla_ros.errors import VlaRosError
from vla_ros.training.config import TRAIN_CONFIG_FILE, TrainConfig
from vla_ros.training.trainer import train

log = logging.getLogger("vla_ros.training.train")
_FLAG_NAMES = {"datasets": "--dataset"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vla_ros.training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", help="Start from this train_config.json; flags override it")
    parser.add_argument("--resume", nargs="?", const="latest",
                        help="Continue the run in --output (latest checkpoint, or the CHECKPOINT_DIR given)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    for spec in iter_fields(TrainConfig):
        flag = _FLAG_NAMES.get(spec.name, "--" + spec.name.replace("_", "-"))
        help_text = f"{spec.meta.description} (default: {spec.default!r})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": spec.name, "help": help_text}
        if spec.meta.choices:
            kwargs["choices"] = spec.meta.choices
        if spec.name == "datasets":
            parser.add_argument(flag, action="append", metavar="DIR", **kwargs)
        elif spec.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(spec.type) is tuple:
            parser.add_argument(flag, nargs="*", type=typing.get_args(spec.type)[0], **kwargs)
        else:
            parser.add_argument(flag, type=spec.type, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags over --config (or, with --resume, over the run's saved train_config.json) over the defaults."""
    given = {spec.name: getattr(args, spec.name) for spec in iter_fields(TrainConfig) if hasattr(args, spec.name)}
    base = None
    if getattr(args, "config", None):
        base = TrainConfig.load_json(args.config)
    elif getattr(args, "resume", None) is not None and "output" in given:
        saved = Path(given["output"]).expanduser() / TRAIN_CONFIG_FILE
        base = TrainConfig.load_json(saved) if saved.is_file() else None
    return TrainConfig.from_dict(given, base=base)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    other_rank = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 reports progress
    logging.basicConfig(level="WARNING" if other_rank else getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train(config_from_args(args), resume=getattr(args, "resume", None))
    except VlaRosError as err:
        log.error("%s", err)
        return 1
    if result.skipped_episodes:
        log.warning("%d episode(s) were skipped; see the warnings above", len(result.skipped_episodes))
    log.info("final checkpoint: %s", result.final_checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
