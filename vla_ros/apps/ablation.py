"""The architecture ablation in the simulator: the seeds' variants trained on one dataset with one budget each.

    python -m vla_ros.apps.ablation --dataset DIR [--dataset DIR2 ...] --output DIR --steps N \\
        --episodes 20 --time-limit-s 18 [--jobs 2] [--eval-jobs 3] [--variants NAME ...]

Every variant starts from the same base architecture (--base-model, default the shipped checkpoint's
config.json), from random weights, with the same seed, data (successful episodes only), steps, batch and
learning-rate schedule; only the architecture (or the auxiliary loss) differs:

    qwenvla_oft         the QwenVLA-OFT baseline: the VLM and the OFT head, no vision expert
    deepvision          DeepVision-VLA: expert coupled into the deep LLM layers, AGVP at the base keep ratio
    deepvision_no_agvp  DeepVision-VLA keeping every expert patch (keep ratio 1.0)
    deepvision_shallow  the expert coupled into the first LLM layers instead (keep ratio 1.0: nothing precedes)
    vla_adapter         the VLM and VLA-Adapter's ActionQuery tokens + Bridge-Attention head, no expert
    vlm4vla             the VLM and VLM4VLA's query token + MLP head, no expert
    deepvision_rocket   DeepVision-VLA plus ROCKET's alignment loss to a frozen teacher (--rocket-teacher)

Stages, each skipped when its result exists, so an interrupted run continues where it stopped: train every
variant (`python -m vla_ros.training.train`, --jobs at a time, OMP_NUM_THREADS=1 each), evaluate every final
checkpoint closed loop (`python -m vla_ros.apps.evaluate` on its own ROS domain, --eval-jobs at a time, same
held-out seeds), measure each model's forward latency alone in this process (batch 1, one thread), then write
OUTPUT/ablation.json, OUTPUT/ablation.md (the table) and OUTPUT/ablation.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from vla_ros.model.configuration import DeepVisionConfig

if TYPE_CHECKING:
    from vla_ros.model.checkpoint import LoadedCheckpoint
from vla_ros.paths import default_checkpoint_dir

TASKS = ("pour", "write")
TEACHER_DIR = "rocket_teacher"


def _baseline(c: DeepVisionConfig) -> DeepVisionConfig:
    return dataclasses.replace(c, expert=None, coupling=dataclasses.replace(c.coupling, num_layers=0))


def _head(c: DeepVisionConfig, name: str) -> DeepVisionConfig:
    return dataclasses.replace(c, head=dataclasses.replace(c.head, name=name, num_query_tokens=0))


def _keep_all(c: DeepVisionConfig) -> DeepVisionConfig:
    return dataclasses.replace(c, pruning=dataclasses.replace(c.pruning, keep_ratio=1.0))


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str  # for the table and the plot
    architecture: Callable[[DeepVisionConfig], DeepVisionConfig]
    rocket: bool = False


VARIANTS = (
    Variant("qwenvla_oft", "QwenVLA-OFT (baseline)", _baseline),
    Variant("deepvision", "DeepVision-VLA", lambda c: c),
    Variant("deepvision_no_agvp", "DeepVision, no AGVP (keep 1.0)", _keep_all),
    Variant("deepvision_shallow", "DeepVision, expert in shallow layers", lambda c: dataclasses.replace(
        _keep_all(c), coupling=dataclasses.replace(c.coupling, llm_layers="shallow"))),
    Variant("vla_adapter", "VLA-Adapter head", lambda c: _head(_baseline(c), "vla_adapter")),
    Variant("vlm4vla", "VLM4VLA head", lambda c: _head(_baseline(c), "vlm4vla")),
    Variant("deepvision_rocket", "DeepVision + ROCKET", lambda c: c, rocket=True),
)
BY_NAME = {v.name: v for v in VARIANTS}


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="recorded dataset(s), shared by all")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument("--base-model", type=Path, default=default_checkpoint_dir() / "config.json",
                        help="DeepVisionConfig JSON every variant is derived from")
    parser.add_argument("--rocket-teacher", type=Path, default=default_checkpoint_dir(),
                        help="vla_ros checkpoint whose expert, frozen, is ROCKET's teacher (no DINOv3 weights "
                             "exist at this size; written once as a Hugging Face DINOv3 directory)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of every parameter group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task")
    parser.add_argument("--time-limit-s", type=float, default=18.0)
    parser.add_argument("--seed0", type=int, default=1000, help="first held-out evaluation layout")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    parser.add_argument("--eval-jobs", type=int, default=3, help="closed-loop evaluations at a time")
    parser.add_argument("--domain0", type=int, default=120, help="ROS domain of the first evaluation job")
    parser.add_argument("--stage", choices=("all", "train", "evaluate", "report"), default="all")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "episodes", "jobs", "eval_jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def _final_checkpoint(run: Path, steps: int) -> Path:
    return run / "checkpoints" / f"step_{steps:08d}"


def write_variant_configs(args: argparse.Namespace) -> dict[str, Path]:
    base = DeepVisionConfig.load_json(args.base_model)
    paths = {}
    for name in args.variants:
        path = args.output / "configs" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        BY_NAME[name].architecture(base).save_json(path)  # validated on construction
        paths[name] = path
    return paths


def export_teacher(checkpoint: Path, out: Path) -> Path:
    """The checkpoint's expert as a Hugging Face DINOv3 directory (what --rocket-teacher-dir reads)."""
    if (out / "config.json").is_file():
        return out
    from vla_ros.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    if loaded.model.expert is None:
        raise SystemExit(f"--rocket-teacher {checkpoint} has no vision expert to teach with")
    loaded.model.expert.save_pretrained(out)
    return out


def _run(command: list[str], log: Path, env: dict[str, str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        return subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env,
                              check=False).returncode


def train_command(args: argparse.Namespace, name: str, config: Path, teacher: Path | None) -> list[str]:
    lr = str(args.lr)
    command = [sys.executable, "-m", "vla_ros.training.train", "--output", str(args.output / "runs" / name),
               "--model", str(config), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--use-proprio", "--success-only", "--num-workers", "1", "--frame-cache-mb", "3072",
               "--lr-vlm", lr, "--lr-expert", lr, "--lr-new", lr, "--lr-head", lr, "--min-lr", "1e-5",
               "--warmup-steps", "100", "--weight-decay", "0.01", "--save-every", str(args.steps),
               "--keep-last-checkpoints", "0", "--log-every", "50", "--seed", str(args.seed), "--no-progress"]
    for dataset in args.dataset:
        command += ["--dataset", dataset]
    if BY_NAME[name].rocket:
        command += ["--rocket", "--rocket-teacher-dir", str(teacher)]
    return command


def _pool(jobs: int, work: dict[str, Callable[[], Any]], desc: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool, tqdm(total=len(work), desc=desc) as bar:
        futures = {pool.submit(fn): name for name, fn in work.items()}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    return results


def train_all(args: argparse.Namespace, configs: dict[str, Path]) -> dict[str, float]:
    teacher = None
    if any(BY_NAME[n].rocket for n in args.variants):
        teacher = export_teacher(args.rocket_teacher, args.output / TEACHER_DIR)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    work = {}
    for name, config in configs.items():
        run = args.output / "runs" / name
        if _final_checkpoint(run, args.steps).is_dir():
            continue

        def job(name: str = name, config: Path = config, run: Path = run) -> float:
            start = time.monotonic()
            rc = _run(train_command(args, name, config, teacher), args.output / "logs" / f"train_{name}.log", env)
            if rc != 0:
                raise SystemExit(f"training {name} failed (exit {rc}): {args.output}/logs/train_{name}.log")
            seconds = time.monotonic() - start
            (run / "wall_s.json").write_text(json.dumps({"train_wall_s": round(seconds, 1)}))
            return seconds
        work[name] = job
    return _pool(args.jobs, work, "train variants")


def evaluate_all(args: argparse.Namespace) -> None:
    free_domains = list(range(args.domain0, args.domain0 + args.eval_jobs))
    work = {}
    for name in args.variants:
        out = args.output / "eval" / name
        if (out / "evaluation.json").is_file():
            continue

        def job(name: str = name, out: Path = out) -> None:
            domain = free_domains.pop()  # list.pop is atomic: one domain per running job
            try:
                command = [sys.executable, "-m", "vla_ros.apps.evaluate", "--checkpoint",
                           str(_final_checkpoint(args.output / "runs" / name, args.steps)), "--tasks", *TASKS,
                           "--episodes", str(args.episodes), "--time-limit-s", str(args.time_limit_s),
                           "--seed0", str(args.seed0), "--output", str(out), "--device", "cpu"]
                env = {**os.environ, "OMP_NUM_THREADS": "1", "ROS_DOMAIN_ID": str(domain)}
                rc = _run(command, args.output / "logs" / f"eval_{name}.log", env)
                if rc not in (0, 1) or not (out / "evaluation.json").is_file():
                    raise SystemExit(f"evaluating {name} failed (exit {rc}): {args.output}/logs/eval_{name}.log")
            finally:
                free_domains.append(domain)
        work[name] = job
    _pool(args.eval_jobs, work, "evaluate variants")


def forward_latency_ms(loaded: LoadedCheckpoint, repeats: int = 30) -> float:
    """Median forward time of the model alone, batch 1, one CPU thread, on a camera-sized random frame."""
    import torch

    torch.set_num_threads(1)
    robot = loaded.processor.config.robot
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (1, len(robot.camera_names), *robot.camera_image_size_px, 3), dtype=torch.uint8,
                           generator=generator)
    state = torch.zeros(1, robot.state_dim)
    times = []
    with torch.no_grad():
        for i in range(repeats + 5):
            start = time.perf_counter()
            loaded.model(loaded.processor(frames, ["pour the cup into the bowl"], state))
            if i >= 5:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def report(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for name in args.variants:
        run, evaluation = args.output / "runs" / name, args.output / "eval" / name / "evaluation.json"
        checkpoint = _final_checkpoint(run, args.steps)
        if not evaluation.is_file():
            print(f"  {name}: no evaluation yet ({evaluation})")
            continue
        result = json.loads(evaluation.read_text())
        tasks = result["summary"]
        log = json.loads((run / "train_log.json").read_text()) if (run / "train_log.json").is_file() else {}
        wall = json.loads((run / "wall_s.json").read_text()) if (run / "wall_s.json").is_file() else {}
        from vla_ros.model.checkpoint import load_checkpoint

        loaded = load_checkpoint(checkpoint)  # once: its config, parameter count and forward time
        config = loaded.model.config
        rows.append({
            "variant": name, "label": BY_NAME[name].label, "parameters": loaded.model.parameter_counts()["total"],
            "expert": config.expert is not None, "head": config.head.name,
            "coupled_llm_layers": list(config.coupled_llm_layers) if config.expert is not None else [],
            "keep_ratio": config.pruning.keep_ratio if config.uses_agvp else None,
            "final_train_l1": _final_loss(log), "train_wall_s": wall.get("train_wall_s"),
            "forward_ms": round(forward_latency_ms(loaded), 2),
            **{f"{task}_{key}": tasks[task][key] for task in TASKS if task in tasks
               for key in ("successes", "episodes", "success_rate", "mean_score")},
            "chunk_latency_p50_ms": round(statistics.median(tasks[t]["latency_ms"]["p50"] for t in TASKS
                                                            if t in tasks), 1),
        })
    summary = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "episodes_per_task": args.episodes, "time_limit_s": args.time_limit_s, "seed0": args.seed0,
               "datasets": args.dataset, "rows": rows}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ablation.json").write_text(json.dumps(summary, indent=2))
    (args.output / "ablation.md").write_text(markdown_table(rows) + "\n")
    if rows:
        plot(rows, args.output / "ablation.png", summary)
    print(markdown_table(rows))
    return summary


def _final_loss(log: dict[str, Any]) -> float | None:
    """Mean action L1 (normalised units, without ROCKET's term) over the last 5 logged steps."""
    entries = log.get("entries", [])[-5:]
    return round(statistics.mean(e["l1"] for e in entries), 4) if entries else None


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate: with 20 episodes a row's rate is known to about +-20 %."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * ((rate * (1 - rate) / trials + z * z / (4 * trials * trials)) ** 0.5) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _success_cell(row: dict[str, Any], task: str) -> str:
    successes, episodes = row.get(f"{task}_successes"), row.get(f"{task}_episodes")
    if successes is None:
        return "-"
    low, high = wilson_interval(successes, episodes)
    return f"{successes}/{episodes} ({low:.0%}-{high:.0%})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = ("| variant | parameters | pour success (95 % interval) | pour score | write success (95 % interval) "
              "| write score | "
              "chunk latency p50 (closed loop) | forward alone (1 thread) | final train L1 | training wall |")
    lines = [header, "|" + " --- |" * header.count(" | ") + " --- |"]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['parameters']:,} | {_success_cell(r, 'pour')} | "
            f"{r.get('pour_mean_score')} | {_success_cell(r, 'write')} | "
            f"{r.get('write_mean_score')} | {r['chunk_latency_p50_ms']} ms | {r['forward_ms']} ms | "
            f"{r['final_train_l1']} | {r['train_wall_s']} s |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig, (ax_success, ax_latency) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.2
    for i, (task, key, hatch) in enumerate([("pour", "success_rate", ""), ("pour", "mean_score", "//"),
                                            ("write", "success_rate", ""), ("write", "mean_score", "//")]):
        values = [r.get(f"{task}_{key}") or 0.0 for r in rows]
        errors = None
        if key == "success_rate":  # the 95 % Wilson interval as asymmetric error bars
            bounds = [wilson_interval(r.get(f"{task}_successes") or 0, r.get(f"{task}_episodes") or 0) for r in rows]
            errors = [[v - low for v, (low, _) in zip(values, bounds)], [high - v for v, (_, high) in zip(values, bounds)]]
        ax_success.bar(x + (i - 1.5) * width, values, width, hatch=hatch, yerr=errors, capsize=2,
                       color="tab:blue" if task == "pour" else "tab:orange", alpha=0.6 if hatch else 1.0,
                       label=f"{task} {key.replace('_', ' ')}")
    ax_success.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax_success.set_ylim(0, 1.05)
    ax_success.set_title(f"closed loop, {summary['episodes_per_task']} held-out layouts per task, "
                         f"{summary['steps']} steps x batch {summary['batch_size']} each (bars: 95 % interval)",
                         fontsize=10)
    ax_success.legend(fontsize=8)
    ax_latency.barh(x, [r["forward_ms"] for r in rows], color="tab:gray", label="forward alone")
    ax_latency.scatter([r["chunk_latency_p50_ms"] for r in rows], x, color="black", zorder=3,
                       label="chunk latency p50, closed loop")
    ax_latency.set_yticks(x, labels, fontsize=8)
    ax_latency.invert_yaxis()
    ax_latency.set_xlabel("ms (CPU)")
    ax_latency.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    configs = write_variant_configs(args)
    if args.stage in ("all", "train"):
        train_all(args, configs)
    if args.stage in ("all", "evaluate"):
        evaluate_all(args)
    if args.stage in ("all", "report"):
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
