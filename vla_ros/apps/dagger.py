"""DAgger on the simulated arm: run the policy, let the scripted expert take over where it goes wrong,
retrain on the corrections, repeat.

    python -m vla_ros.apps.dagger --checkpoint models/deepvision_sim --output DIR --rounds N --episodes K \\
        [--tasks pour write] [--steps S] [--eval-episodes E] [--dataset DIR ...]

Round r (1..N): K episodes per task on new layouts (seeds seed0 + (r-1)*K ...) through policy_node,
safety_node, sim_robot_node, recorder_node and teleop_node (vla_ros.apps.dagger_session): the
DaggerSupervisor takes over through teleop_node when the arm strays from the expert's path or stalls,
and hands back once the expert finished that stage; the recorder marks those frames
source=intervention. Then training continues from the current checkpoint on every round's episodes
(and the --dataset demonstrations, if given): by default only on the expert's corrections (HG-DAgger's
labels; --train-on all: every frame, corrections up-weighted by --intervention-weight), and the
new checkpoint is evaluated closed loop on held-out layouts (eval seeds, never used for collection).
Round 0 evaluates the starting checkpoint. Writes OUTPUT/dagger_summary.json and OUTPUT/dagger.png
(success per round and task, interventions per round); tqdm shows progress. The starting checkpoint
is never modified.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vla_ros.config.sim import SIM_TASKS
from vla_ros.apps import evaluate
from vla_ros.paths import default_checkpoint_dir
from vla_ros.apps.dagger_session import DaggerSession
from vla_ros.apps.session import SessionError

TASKS = SIM_TASKS


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help=f"start from (default {default_checkpoint_dir()})")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=5, help="DAgger episodes per task and round")
    parser.add_argument("--seed0", type=int, default=2000, help="first collection seed (apart from demos and eval)")
    parser.add_argument("--time-limit-s", type=float, default=18.0, help="goal time limit (collection and eval)")
    parser.add_argument("--deviation-rad", type=float, default=0.3, help="take over beyond this distance")
    parser.add_argument("--stall-s", type=float, default=4.0, help="take over when the arm stalls this long")
    parser.add_argument("--dataset", action="append", default=[], help="also train on these (e.g. the demos)")
    parser.add_argument("--steps", type=int, default=500, help="training steps per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--train-on", choices=("intervention", "all"), default="intervention",
                        help="intervention: only the expert's corrections (HG-DAgger); all: every frame, the "
                             "corrections up-weighted by --intervention-weight")
    parser.add_argument("--intervention-weight", type=float, default=3.0)
    parser.add_argument("--eval-episodes", type=int, default=10, help="held-out episodes per task per round")
    parser.add_argument("--eval-seed0", type=int, default=1000)
    parser.add_argument("--skip-initial-eval", action="store_true", help="no round-0 evaluation")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    for name in ("rounds", "episodes", "steps", "eval_episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def collect(args, round_dir: Path, checkpoint: Path, round_index: int) -> dict[str, Any]:
    """One round of DAgger episodes; their summary (interventions, successes) per task."""
    plan = [(task, args.seed0 + (round_index - 1) * args.episodes + i)
            for i in range(args.episodes) for task in args.tasks]
    rows = []
    with DaggerSession(round_dir / "collect_logs", str(checkpoint), str(round_dir / "dataset"), device=args.device,
                       deviation_rad=args.deviation_rad, stall_s=args.stall_s) as session:
        with tqdm(plan, unit="episode", file=sys.stdout, desc=f"round {round_index} collect") as bar:
            for task, seed in bar:
                before = len(session.takeover_reasons)
                report = session.run_episode(task, seed, args.time_limit_s)
                rows.append({"task": task, "seed": seed, "success": report.success, "score": report.score,
                             "interventions": report.intervention_count,
                             "intervention_s": round(report.intervention_s, 2),
                             "reasons": session.takeover_reasons[before:], "outcome": report.outcome})
                bar.set_postfix(interventions=sum(r["interventions"] for r in rows), refresh=False)
    return {"episodes": rows, **{task: {"episodes": sum(r["task"] == task for r in rows),
                                        "successes": sum(r["success"] for r in rows if r["task"] == task),
                                        "interventions": sum(r["interventions"] for r in rows if r["task"] == task)}
                                 for task in args.tasks}}


def train_round(args, round_dir: Path, checkpoint: Path, datasets: list[str], seed: int) -> Path:
    from vla_ros.training.config import TrainConfig
    from vla_ros.training.trainer import train

    lr = args.lr
    config = TrainConfig(datasets=tuple(datasets), init_checkpoint=str(checkpoint), output=str(round_dir / "run"),
                         steps=args.steps, batch_size=args.batch_size, use_proprio=True, lr_vlm=lr, lr_expert=lr,
                         lr_new=lr, lr_head=lr, min_lr=lr / 10, warmup_steps=min(50, args.steps // 10),
                         weight_decay=0.01, intervention_weight=args.intervention_weight,
                         source_filter=("intervention",) if args.train_on == "intervention" else (),
                         save_every=args.steps, keep_last_checkpoints=1, log_every=10, seed=seed,
                         device=args.device)
    return Path(train(config).final_checkpoint)


def evaluate_round(args, round_dir: Path, checkpoint: Path) -> dict[str, Any]:
    code = evaluate.main(["--checkpoint", str(checkpoint), "--tasks", *args.tasks, "--episodes", str(args.eval_episodes),
                          "--time-limit-s", str(args.time_limit_s), "--output", str(round_dir / "eval"),
                          "--seed0", str(args.eval_seed0), "--device", args.device, "--plot-episodes", "1",
                          "--frames-per-episode", "2"])
    if code != 0:
        raise SessionError(f"evaluation of {checkpoint} failed (exit code {code})")
    summary = json.loads((round_dir / "eval" / "evaluation.json").read_text())["summary"]
    return {task: {"successes": s["successes"], "episodes": s["episodes"], "success_rate": s["success_rate"],
                   "mean_score": s["mean_score"]} for task, s in summary.items()}


def plot(rounds: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    evaluated = [r for r in rounds if r.get("eval")]
    for task in tasks:
        ax.plot([r["round"] for r in evaluated], [100 * r["eval"][task]["success_rate"] for r in evaluated],
                marker="o", label=task)
    ax.set_xticks([r["round"] for r in rounds])
    bx.set_xticks([r["round"] for r in rounds])
    ax.set(xlabel="DAgger round (0 = starting checkpoint)", ylabel="held-out success [%]", ylim=(-5, 105),
           title="closed-loop success on held-out layouts")
    ax.legend()
    collected = [r for r in rounds if r.get("collect")]
    bx.bar([r["round"] for r in collected],
           [sum(r["collect"][t]["interventions"] for t in tasks) for r in collected])
    bx.set(xlabel="DAgger round", ylabel="takeovers", title="expert takeovers while collecting")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = (args.checkpoint or default_checkpoint_dir()).resolve()
    summary: dict[str, Any] = {"start_checkpoint": str(checkpoint), "args": {k: str(v) for k, v in vars(args).items()},
                               "rounds": []}
    datasets = [str(Path(d).resolve()) for d in args.dataset]
    t0 = time.monotonic()

    def save() -> None:
        summary["wall_time_s"] = round(time.monotonic() - t0, 1)
        (out / "dagger_summary.json").write_text(json.dumps(summary, indent=2))
        plot(summary["rounds"], args.tasks, out / "dagger.png")

    try:
        with tqdm(range(0 if not args.skip_initial_eval else 1, args.rounds + 1), unit="round", file=sys.stdout,
                  desc="DAgger") as bar:
            for r in bar:
                round_dir = out / f"round_{r}"
                round_dir.mkdir(exist_ok=True)
                row: dict[str, Any] = {"round": r, "checkpoint": str(checkpoint)}
                summary["rounds"].append(row)
                if r > 0:
                    row["collect"] = collect(args, round_dir, checkpoint, r)
                    datasets.append(str(round_dir / "dataset"))
                    save()
                    if args.train_on == "intervention" and not any(
                            row["collect"][t]["interventions"] for t in args.tasks) and not args.dataset:
                        tqdm.write(f"round {r}: no takeover, nothing to learn from; checkpoint unchanged", file=sys.stdout)
                    else:
                        checkpoint = train_round(args, round_dir, checkpoint, datasets, seed=r)
                    row["checkpoint"] = str(checkpoint)
                row["eval"] = evaluate_round(args, round_dir, checkpoint)
                save()
                tqdm.write("round {}: {}".format(r, ", ".join(
                    f"{t} {v['successes']}/{v['episodes']}" for t, v in row["eval"].items())), file=sys.stdout)
    except SessionError as err:
        print(f"DAgger stopped: {err}", file=sys.stderr)
        save()
        return 1
    save()
    print(f"written: {out / 'dagger_summary.json'}, {out / 'dagger.png'}")
    for row in summary["rounds"]:
        print(f"  round {row['round']}: " + ", ".join(f"{t} {v['successes']}/{v['episodes']}"
                                                      for t, v in row["eval"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
