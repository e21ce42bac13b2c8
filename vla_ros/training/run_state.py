"""Run directory: step checkpoints written atomically, the pointer to the latest, RNG and training state.

<output>/checkpoints/step_00000100/ is a complete model checkpoint (config.json, model.safetensors,
norm_stats.json, tokenizer files: what DeepVisionPolicy.from_checkpoint and policy_node load) plus
train_config.json and training_state/ (optimizer, scheduler, step, data order, RNG states, ROCKET projector).
A checkpoint is written into a hidden sibling directory, flushed to disk, then renamed into place, and
checkpoints/latest.json is replaced after it: a crash leaves either the old or the new checkpoint, never half.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.errors import CheckpointError
from vla_ros.fileio import fsync_tree, write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
STATE_DIR = "training_state"
TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
ROCKET_FILE = "rocket_projector.pt"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def write_checkpoint(run_dir: Path, step: int, fill: Callable[[Path], None], keep_last: int) -> Path:
    """Create checkpoints/step_N by calling fill(tmp_dir), then publish it and prune old ones; returns its path."""
    root = run_dir / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crash while writing: never published, safe to drop
    tmp.mkdir()
    fill(tmp)
    fsync_tree(tmp)
    if final.exists():  # rewritten after a resume from an earlier step
        old = root / f".{step_name(step)}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    write_json_atomic(root / LATEST_FILE, {"step": step, "checkpoint": final.name})
    if keep_last > 0:
        for stale in completed_checkpoints(run_dir)[:-keep_last]:
            if stale != final:
                shutil.rmtree(stale)
    return final


def completed_checkpoints(run_dir: Path) -> list[Path]:
    """Published step checkpoints, oldest first."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint latest.json names, else the highest published step, else None."""
    pointer = run_dir / CHECKPOINTS_DIR / LATEST_FILE
    if pointer.is_file():
        try:
            candidate = pointer.parent / json.loads(pointer.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{pointer} is not a valid latest-checkpoint pointer: {err}") from err
        if candidate.is_dir():
            return candidate
        log.warning("%s names %s, which is missing; using the newest checkpoint present", pointer, candidate)
    found = completed_checkpoints(run_dir)
    return found[-1] if found else None


# ---- RNG ----

def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (torch CPU and CUDA, numpy, python), as tensors and lists."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": {"version": python_state[0], "state": list(python_state[1]), "gauss": python_state[2]},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def load_torch(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: the checkpoint has no training state to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable training-state file: {err}") from err


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / STATE_DIR / TRAINER_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {checkpoint} is a model checkpoint without training state")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
