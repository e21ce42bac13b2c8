"""Record scripted demonstrations in the sim, the way a teleop session records them.

    python -m vla_ros.apps.collect --task pour|write|both --episodes N --dataset DIR [--seed0 S] [--device D]

Starts sim_robot_node, recorder_node and scripted_teleop_node (each its own process). Per episode the
sim is reset with seed S, S+1, ... (randomised object placement, letter), the scripted expert
teleoperates the arm over ROS and the recorder writes the episode (source "teleop", task = the sim's
instruction, is_success from the sim's task check). With --task both, N episodes of each task are
recorded, alternating pour and write with the same seeds. Prints a summary and writes it to
LOG_DIR/collection_summary.json; every process is taken down again. Exit code 0 when every
demonstration was recorded.

--device command (default): the expert commands the arm directly. --device leader: it plays a leader
arm and --device joy a gamepad (joint jog, deadman held) for teleop_node, whose chunks pass through
safety_node: the path a person's teleoperation takes (teleop_node and safety_node are started too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from vla_ros.config.sim import SIM_TASKS
from vla_ros.apps.session import SessionError
from vla_ros.apps.teleop_session import TeleopSession

TASKS = SIM_TASKS


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS + ("both",), default="both")
    parser.add_argument("--episodes", type=int, default=10, help="demonstrations per task")
    parser.add_argument("--dataset", type=Path, required=True, help="dataset directory (created or appended to)")
    parser.add_argument("--seed0", type=int, default=0, help="seed of the first episode; then +1 per episode")
    parser.add_argument("--log-dir", type=Path, default=None, help="node logs (default: DATASET/../collect_logs)")
    parser.add_argument("--device", choices=("command", "leader", "joy"), default="command",
                        help="how the scripted expert drives the arm (see above)")
    parser.add_argument("--control-rate-hz", type=float, default=20.0, help="teleop command rate")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="wall-clock limit per demonstration")
    parser.add_argument("--retries", type=int, default=1,
                        help="times a demonstration that left no episode (nothing recorded) is redone")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    if args.seed0 < 0:
        parser.error(f"--seed0 must be >= 0, got {args.seed0}")
    return args


def schedule(task: str, episodes: int, seed0: int) -> list[tuple[str, int]]:
    """(task, seed) per episode: pour and write alternate for 'both'."""
    tasks = TASKS if task == "both" else (task,)
    return [(name, seed0 + i) for i in range(episodes) for name in tasks]


def summarize(results: list[dict], wall_s: float) -> dict:
    kept = [r for r in results if not r.get("error")]
    per_task = {}
    for task in sorted({r["task"] for r in results if "task" in r}):
        rows = [r for r in kept if r.get("task") == task]
        per_task[task] = {"episodes": len(rows), "successes": sum(r["success"] for r in rows),
                          "frames": sum(r["frame_count"] for r in rows)}
    return {"episodes_kept": len(kept), "episodes_failed_to_record": len(results) - len(kept),
            "successes": sum(r["success"] for r in kept), "frames": sum(r["frame_count"] for r in kept),
            "per_task": per_task, "wall_time_s": round(wall_s, 1), "episodes": results}


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    dataset = args.dataset.resolve()
    log_dir = (args.log_dir or dataset.parent / "collect_logs").resolve()
    plan = schedule(args.task, args.episodes, args.seed0)
    print(f"recording {len(plan)} demonstrations into {dataset} (node logs in {log_dir})", flush=True)
    t0 = time.monotonic()
    results: list[dict] = []
    unrecorded_attempts = 0
    try:
        with TeleopSession(log_dir, str(dataset), teleop_params={"control_rate_hz": args.control_rate_hz},
                           device=args.device) as session:
            with tqdm(plan, unit="episode", file=sys.stdout) as bar:
                for task, seed in bar:
                    bar.set_description(f"{task} seed {seed}")
                    for attempt in range(1 + args.retries):  # a demonstration that left no episode is redone
                        result = session.run_demonstration(task, seed, timeout_s=args.timeout_s)
                        if not result.get("error"):
                            break
                        unrecorded_attempts += 1
                        tqdm.write(f"  {task} seed {seed}: not recorded (attempt {attempt + 1} of "
                                   f"{1 + args.retries}): {result['error']}", file=sys.stdout)
                    results.append(result)
                    bar.set_postfix(successes=sum(r["success"] for r in results), refresh=False)
    except SessionError as err:
        print(f"collection failed: {err}", file=sys.stderr)
        return 1
    finally:  # also after a failure: what was recorded is in the dataset
        summary = summarize(results, time.monotonic() - t0)
        summary["unrecorded_attempts"] = unrecorded_attempts  # attempts redone because they left no episode
        summary_path = log_dir / "collection_summary.json"
        summary_path.write_text(json.dumps(summary, indent=2))
    print(f"\nkept {summary['episodes_kept']} episodes ({summary['frames']} frames), "
          f"{summary['successes']} successful, in {summary['wall_time_s']:.0f} s")
    for task, row in summary["per_task"].items():
        print(f"  {task:<6} {row['episodes']:>3} episodes  {row['successes']:>3} successes  {row['frames']:>6} frames")
    print(f"summary written to {summary_path}")
    return 0 if summary["episodes_failed_to_record"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
