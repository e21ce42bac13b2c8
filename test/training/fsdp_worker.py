"""Worker of the FSDP2 tests: one process of a torchrun-like gloo group on the CPU (spawned by the test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test.training.tiny import tiny_train_config
from vla_ros.training.trainer import Trainer, train

# Phases run one after another in the same processes, each in its own process group (own port).
PHASES = ("uninterrupted", "stopped", "resumed")


def run(rank: int, world_size: int, ports: list[int], dataset: str, out: str, settings: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank))
    report: dict = {}
    for phase, port in zip(PHASES, ports):
        os.environ["MASTER_PORT"] = str(port)
        run_dir = Path(out) / ("full" if phase == "uninterrupted" else "stopped")
        config = tiny_train_config(Path(dataset), run_dir, **settings)
        if phase == "resumed":
            result = train(config, resume="latest")
        else:
            trainer = Trainer(config)
            try:
                report[f"{phase}_local_parameter_bytes"] = trainer.parameter_bytes_local
                result = trainer.run(until_step=2 if phase == "stopped" else None)
            finally:
                trainer.close()
        report[phase] = {"steps": result.steps, "losses": [e["loss"] for e in result.entries],
                         "checkpoint": str(result.final_checkpoint)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
