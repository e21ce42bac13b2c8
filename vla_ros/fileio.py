"""Crash-safe file writing shared by the recorder and the trainer (stdlib only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file below `root`, then every directory, `root` included."""
    paths = sorted(Path(root).rglob("*"))
    for path in paths:
        if path.is_file():
            fsync_path(path)
    for directory in [Path(root), *(p for p in paths if p.is_dir())]:
        fsync_path(directory)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write aside, fsync, then os.replace: readers see the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
