"""train_log.json (one entry per logged step) and loss_curve.png of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from vla_ros.fileio import write_json_atomic  # noqa: E402

TRAIN_LOG_FILE = "train_log.json"
LOSS_CURVE_FILE = "loss_curve.png"


class TrainLog:
    """Entries {step, loss, l1[, align], grad_norm, lr{group}, epoch, samples_per_s, elapsed_s}, kept in order."""

    def __init__(self, run_dir: Path, entries: list[dict[str, Any]] | None = None) -> None:
        self.path = run_dir / TRAIN_LOG_FILE
        self.plot_path = run_dir / LOSS_CURVE_FILE
        self.entries = list(entries or [])

    @classmethod
    def resume(cls, run_dir: Path, step: int) -> TrainLog:
        """The log of an interrupted run, cut at `step` (entries after it are redone)."""
        path = run_dir / TRAIN_LOG_FILE
        entries = json.loads(path.read_text())["entries"] if path.is_file() else []
        return cls(run_dir, [e for e in entries if e["step"] <= step])

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def save(self) -> None:
        write_json_atomic(self.path, {"entries": self.entries})

    def plot(self) -> Path:
        """Loss curves against step (log scale); returns the PNG path."""
        figure, axis = plt.subplots(figsize=(8, 4.5))
        rocket = any("align" in e for e in self.entries)
        for key, label in (("loss", "total"), ("l1", "L1 (actions)"), ("align", "ROCKET alignment")):
            if key == "loss" or rocket:  # without ROCKET the total is the L1
                axis.plot([e["step"] for e in self.entries], [e[key] for e in self.entries], label=label)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss (normalised units)")
        if self.entries and all(e["loss"] > 0 for e in self.entries):
            axis.set_yscale("log")
        axis.set_title("training loss")
        axis.grid(True, which="both", alpha=0.3)
        if axis.lines:
            axis.legend()
        figure.tight_layout()
        figure.savefig(self.plot_path, dpi=100)
        plt.close(figure)
        return self.plot_path
