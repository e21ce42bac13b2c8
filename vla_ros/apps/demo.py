"""The main job: the trained DeepVision-VLA policy on the simulated arm, one recorded episode.

    bash scripts/demo.sh [--task write] [--duration-s 20] [--checkpoint DIR] [--device cpu] [--backend onnxruntime]

Starts sim_robot_node, safety_node, policy_node and recorder_node (each its own process),
sends a RunPolicy goal with the sim's instruction, records the rollout, prints a summary and
takes every process down again. Exit code 0 when the goal ran to its time limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from vla_ros.config.sim import SIM_TASKS
from vla_ros.paths import default_checkpoint_dir
from vla_ros.apps.session import SessionError, SimSession


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=SIM_TASKS, default="pour")
    parser.add_argument("--seed", type=int, default=0, help="object placement (and letter) of the sim")
    parser.add_argument("--duration-s", type=float, default=20.0, help="time limit of the goal")
    parser.add_argument("--checkpoint", default="", help=f"default: {default_checkpoint_dir()}")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                        help="policy_node's inference_backend (onnxruntime: the whole step exported to ONNX, cached)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/demo"),
                        help="dataset (recorded episode), node logs and summary.json go here")
    return parser.parse_args(argv)


def _backend(info: dict) -> str:
    """"onnxruntime (CPUExecutionProvider)", "torch (cpu, eager)": what policy_node reported serving with."""
    if info.get("backend") == "onnxruntime":
        return f"onnxruntime ({info.get('provider')})"
    if info.get("backend") == "torch":
        return f"torch ({info.get('device')}, {'static forward' if info.get('fast_inference') else 'eager'})"
    return str(info.get("backend", "unknown"))


def main(argv: list[str] | None = None, make_session=SimSession) -> int:
    """`make_session` builds the session (SimSession's arguments); vla_ros.apps.two_hosts splits it."""
    args = _args(argv)
    out = args.output_dir.resolve()
    dataset = out / "dataset"
    print(f"starting the nodes (logs in {out / 'logs'}) ...", flush=True)
    t0 = time.monotonic()
    try:
        with make_session(out / "logs", checkpoint_dir=args.checkpoint, device=args.device, record=True,
                        dataset_root=str(dataset), backend=args.backend) as session:
            nodes_up_s = time.monotonic() - t0
            info = session.policy_info
            print(f"nodes up in {nodes_up_s:.1f} s (policy_node on {_backend(info)} ready {info.get('ready_s')} s "
                  f"after its start); running task '{args.task}' for {args.duration_s:.0f} s", flush=True)
            with tqdm(total=round(args.duration_s), unit="s", desc=args.task, file=sys.stdout) as bar:
                def progress(elapsed_s: float, chunks: int) -> None:
                    second = min(int(elapsed_s), bar.total)
                    if second > bar.n:  # one line per second, also when stdout is a log file
                        bar.set_postfix(chunks=chunks, refresh=False)
                        bar.update(second - bar.n)

                report = session.run_episode(args.task, args.seed, args.duration_s, progress=progress)
    except SessionError as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    clipped = sum(report.clipped_commands.values())
    summary = {
        "task": report.task, "instruction": report.instruction, "outcome": report.outcome,
        "reason": report.reason, "inference_backend": _backend(info),
        "policy_ready_s": info.get("ready_s"), "nodes_up_s": round(nodes_up_s, 1), "chunks": report.chunks,
        "inference_latency_ms": {"p50": round(report.latency_ms(50), 2), "p99": round(report.latency_ms(99), 2)},
        "kept_expert_tokens": report.kept_expert_tokens,
        "commands_sent": report.commands_sent, "clipped_joint_commands": clipped,
        "clipped_per_joint": report.clipped_commands,
        "rejected_chunks": report.rejected_chunks, "dropped_chunks": report.dropped_chunks,
        "arm_travel_rad": round(report.joint_travel_rad, 3),
        "task_success": report.success, "task_score": round(report.score, 3),
        "episode_id": report.episode_id, "dataset": str(dataset),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
    print(f"\nsummary written to {out / 'summary.json'}")
    return 0 if report.outcome == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
