"""Closed-loop evaluation of a checkpoint on the simulated arm.

    python -m vla_ros.apps.evaluate --checkpoint DIR --tasks pour write --episodes N --time-limit-s T \\
        --output DIR [--seed0 S] [--random-weights] [--backend torch|onnxruntime]

Runs N episodes per task through policy_node -> safety_node -> sim_robot_node (each its own process,
vla_ros.apps.session.SimSession): per episode the sim is reset with seed S, S+1, ..., a RunPolicy goal
with the sim's instruction runs for T seconds, and the sim's task check says success. Writes
OUTPUT/evaluation.json (per task: success rate, mean score, episode lengths, clipped commands, chunk
latency p50/p99; every episode's numbers) and OUTPUT/evaluation.png: a few camera frames per episode
with the expert patches AGVP keeps for that frame outlined (computed by running the checkpoint in this
process on the frame, the joint state and the instruction).

--random-weights evaluates a checkpoint with the same config, norm stats and tokenizer but random
weights (the baseline); it is written to OUTPUT/random_weights_checkpoint. The default seed0 (1000)
keeps evaluation layouts apart from the collection's (seeds 0 ..).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vla_ros.observation import resize_frame
from vla_ros.paths import default_checkpoint_dir
from vla_ros.apps.session import EpisodeReport, SessionError, SimSession

TASKS = ("pour", "write")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help=f"default: {default_checkpoint_dir()}")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task")
    parser.add_argument("--time-limit-s", type=float, default=20.0, help="goal time limit per episode")
    parser.add_argument("--output", type=Path, required=True, help="evaluation.json, evaluation.png, node logs")
    parser.add_argument("--seed0", type=int, default=1000, help="seed of the first episode of each task")
    parser.add_argument("--random-weights", action="store_true",
                        help="same config and norm stats as --checkpoint, random weights (baseline)")
    parser.add_argument("--weights-seed", type=int, default=0, help="torch seed of --random-weights")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                        help="policy_node's inference_backend")
    parser.add_argument("--frames-per-episode", type=int, default=4, help="frames per episode in the PNG")
    parser.add_argument("--plot-episodes", type=int, default=3, help="episodes per task shown in the PNG")
    args = parser.parse_args(argv)
    for name in ("episodes", "frames_per_episode"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.time_limit_s <= 0:
        parser.error(f"--time-limit-s must be > 0, got {args.time_limit_s}")
    if args.seed0 < 0:
        parser.error(f"--seed0 must be >= 0, got {args.seed0}")
    return args


def random_weights_checkpoint(source: Path, path: Path, seed: int) -> Path:
    """A checkpoint with `source`'s config, norm stats and tokenizer and freshly initialised weights."""
    from vla_ros.model.checkpoint import NORM_STATS_FILE, create_random_checkpoint, load_config
    from vla_ros.model.normalization import NormStats

    return create_random_checkpoint(path, load_config(source), seed=seed,
                                    norm_stats=NormStats.load(source / NORM_STATS_FILE))


def episode_record(report: EpisodeReport) -> dict[str, Any]:
    clipped = int(sum(report.clipped_commands.values()))
    return {"task": report.task, "seed": report.seed, "instruction": report.instruction,
            "success": report.success, "score": round(report.score, 4), "task_details": report.task_details,
            "outcome": report.outcome, "reason": report.reason, "duration_s": round(report.duration_s, 2),
            "success_time_s": None if report.success_time_s is None else round(report.success_time_s, 2),
            "chunks": report.chunks, "commands_sent": report.commands_sent, "clipped_commands": clipped,
            "clipped_per_joint": report.clipped_commands, "rejected_chunks": report.rejected_chunks,
            "dropped_chunks": report.dropped_chunks, "kept_expert_tokens": report.kept_expert_tokens,
            "latency_ms": {"p50": round(report.latency_ms(50), 2), "p99": round(report.latency_ms(99), 2)},
            "arm_travel_rad": round(report.joint_travel_rad, 3)}


def _rounded(values: list[float], q: float | None = None) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q) if q is not None else np.mean(values)), 3)


def task_summary(reports: list[EpisodeReport]) -> dict[str, Any]:
    latencies_ms = [s * 1e3 for r in reports for s in r.inference_s]
    success_times = [r.success_time_s for r in reports if r.success_time_s is not None]
    return {
        "episodes": len(reports), "successes": sum(r.success for r in reports),
        "success_rate": round(sum(r.success for r in reports) / len(reports), 3),
        "mean_score": _rounded([r.score for r in reports]),
        "episode_length_s": {"mean": _rounded([r.duration_s for r in reports]),
                             "min": _rounded([min(r.duration_s for r in reports)]),
                             "max": _rounded([max(r.duration_s for r in reports)])},
        "time_to_success_s": {"mean": _rounded(success_times), "count": len(success_times)},
        "chunks_per_episode": _rounded([r.chunks for r in reports]),
        "clipped_commands": int(sum(sum(r.clipped_commands.values()) for r in reports)),
        "clipped_commands_per_episode": _rounded([sum(r.clipped_commands.values()) for r in reports]),
        "commands_sent": int(sum(r.commands_sent for r in reports)),
        "rejected_chunks": int(sum(r.rejected_chunks for r in reports)),
        "dropped_chunks": int(sum(r.dropped_chunks for r in reports)),
        "latency_ms": {"p50": _rounded(latencies_ms, 50), "p99": _rounded(latencies_ms, 99),
                       "count": len(latencies_ms)},
    }


def pick_frames(report: EpisodeReport, count: int) -> list:
    """`count` captured frames spread evenly over the episode (fewer if fewer were captured)."""
    frames = report.frames
    if len(frames) <= count:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def kept_patches(checkpoint: Path, reports: list[EpisodeReport], frames_per_episode: int) -> list[list[tuple]]:
    """Per report: [(frame, kept indices (K,), patch grid (Pe_h, Pe_w))], the checkpoint run in this process."""

    from vla_ros.model.policy import DeepVisionPolicy
    from vla_ros.types import Observation

    policy = DeepVisionPolicy.from_checkpoint(checkpoint, device="cpu")
    expert = policy.model.config.expert
    grid = expert.patch_grid if expert is not None else (1, 1)
    height, width = policy.spec.image_size_px
    rows = []
    for report in reports:
        row = []
        for frame in pick_frames(report, frames_per_episode):
            image = resize_frame(frame.image, height, width)
            state = np.array([frame.joint_positions[n] for n in policy.spec.joint_names])
            obs = Observation(images=(image,), state=state, instruction=report.instruction, stamp_ns=0)
            row.append((frame, policy.kept_patch_indices(obs)[0], grid))
        rows.append(row)
    return rows


def plot(rows: list[list[tuple]], reports: list[EpisodeReport], summary: dict[str, Any], title: str,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = max(1, max((len(r) for r in rows), default=1))
    fig, axes = plt.subplots(max(1, len(rows)), columns, figsize=(2.7 * columns, 2.2 * max(1, len(rows)) + 0.8),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    lines = [f"{task}: {s['successes']}/{s['episodes']} successes, mean score {s['mean_score']}, chunk latency p50 "
             f"{s['latency_ms']['p50']} ms, clipped commands {s['clipped_commands']}" for task, s in summary.items()]
    fig.suptitle("\n".join([f"{title} (yellow: expert patches AGVP keeps)"] + lines), fontsize=9)
    for i, (row, report) in enumerate(zip(rows, reports)):
        for j, (frame, kept, grid) in enumerate(row):
            ax = axes[i, j]
            ax.imshow(frame.image)
            height, width = frame.image.shape[:2]
            cell_h, cell_w = height / grid[0], width / grid[1]
            for index in kept:
                r, c = divmod(int(index), grid[1])
                ax.add_patch(Rectangle((c * cell_w, r * cell_h), cell_w, cell_h, fill=True, facecolor="yellow",
                                       alpha=0.2, edgecolor="yellow", linewidth=0.5))
            ax.set_title(f"t={frame.time_s:.1f} s, {len(kept)} kept", fontsize=7)
        axes[i, 0].set_ylabel(f"{report.task} seed {report.seed}\n"
                              f"{'SUCCESS' if report.success else 'fail'} ({report.score:.2f})", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = (args.checkpoint or default_checkpoint_dir()).resolve()
    evaluated = checkpoint
    if args.random_weights:
        evaluated = random_weights_checkpoint(checkpoint, out / "random_weights_checkpoint", args.weights_seed)
    frames_wanted = args.frames_per_episode
    capture_period_s = args.time_limit_s / (3 * frames_wanted)  # enough to pick evenly spread frames from
    print(f"evaluating {evaluated} on {args.tasks}, {args.episodes} episode(s) each, {args.time_limit_s:.0f} s "
          f"limit (node logs in {out / 'logs'})", flush=True)
    reports: dict[str, list[EpisodeReport]] = {task: [] for task in args.tasks}
    t0 = time.monotonic()
    try:
        with SimSession(out / "logs", checkpoint_dir=str(evaluated), device=args.device,
                        capture_period_s=capture_period_s, backend=args.backend) as session:
            policy_info = session.policy_info
            plan = [(task, args.seed0 + i) for task in args.tasks for i in range(args.episodes)]
            with tqdm(plan, unit="episode", file=sys.stdout) as bar:
                for task, seed in bar:
                    bar.set_description(f"{task} seed {seed}")
                    reports[task].append(session.run_episode(task, seed, args.time_limit_s))
                    bar.set_postfix(successes=sum(r.success for rs in reports.values() for r in rs), refresh=False)
    except SessionError as err:
        print(f"evaluation failed: {err}", file=sys.stderr)
        return 1
    summary = {task: task_summary(rs) for task, rs in reports.items()}
    result = {"checkpoint": str(checkpoint), "evaluated_checkpoint": str(evaluated),
              "random_weights": args.random_weights, "inference_backend": args.backend,
              "policy_info": policy_info, "tasks": args.tasks, "episodes_per_task": args.episodes,
              "time_limit_s": args.time_limit_s, "seed0": args.seed0, "wall_time_s": round(time.monotonic() - t0, 1),
              "summary": summary,
              "episodes": [episode_record(r) for rs in reports.values() for r in rs]}
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    shown = [r for rs in reports.values() for r in rs[: args.plot_episodes]]
    rows = kept_patches(evaluated, shown, frames_wanted)
    label = f"random weights with the config of {checkpoint.name}" if args.random_weights else checkpoint.name
    plot(rows, shown, summary, label, out / "evaluation.png")
    print()
    for task, s in summary.items():
        print(f"  {task:<6} success {s['successes']}/{s['episodes']} ({s['success_rate']:.0%})  score "
              f"{s['mean_score']}  clipped {s['clipped_commands']}  latency p50 {s['latency_ms']['p50']} ms "
              f"p99 {s['latency_ms']['p99']} ms")
    print(f"written: {out / 'evaluation.json'}, {out / 'evaluation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
