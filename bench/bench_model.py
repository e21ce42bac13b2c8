"""Parameter counts and per-chunk latency of DeepVision-VLA; prints a table, writes JSON and a PNG.

    python bench/bench_model.py [--out bench/results/model_latency.json] [--iters 50]

CPU: the tiny config (end-to-end `predict`, i.e. preprocessing + forward + unnormalisation, and forward
only). CUDA (when present): the paper config with random weights in bf16. Paper parameter counts are
always reported (the model is built on the meta device, so that costs no memory).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import transformers
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from vla_ros.model.checkpoint import LoadedCheckpoint, create_random_checkpoint, placeholder_norm_stats  # noqa: E402
from vla_ros.model.configuration import DeepVisionConfig  # noqa: E402
from vla_ros.model.modeling_deepvision import DeepVisionVLA  # noqa: E402
from vla_ros.model.policy import DeepVisionPolicy  # noqa: E402
from vla_ros.model.processing import DeepVisionProcessor, build_byte_tokenizer  # noqa: E402
from vla_ros.types import Observation  # noqa: E402

INSTRUCTION = "pick up the red cube and place it in the bowl"
KEEP_RATIOS = (0.25, 0.5, 1.0)


def observation(config: DeepVisionConfig, seed: int = 0, instruction: str = INSTRUCTION) -> Observation:
    rng = np.random.default_rng(seed)
    robot = config.robot
    images = tuple(rng.integers(0, 256, (*robot.camera_image_size_px, 3), dtype=np.uint8) for _ in robot.camera_names)
    return Observation(images=images, state=rng.normal(size=robot.state_dim), instruction=instruction, stamp_ns=0)


def time_calls(call: Callable[[], object], iters: int, warmup: int, sync: Callable[[], None], label: str
               ) -> list[float]:
    for _ in range(warmup):
        call()
    sync()
    times_ms = []
    for _ in tqdm(range(iters), desc=label, leave=False):
        start = time.perf_counter()
        call()
        sync()
        times_ms.append((time.perf_counter() - start) * 1e3)
    return times_ms


def summary(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    p50 = pct(0.5)
    return {"p50_ms": p50, "p90_ms": pct(0.9), "p99_ms": pct(0.99), "mean_ms": statistics.fmean(ordered),
            "min_ms": ordered[0], "max_ms": ordered[-1], "p99_over_p50": pct(0.99) / p50 if p50 > 0 else None,
            "n": len(ordered)}


def bench_policy(name: str, policy: DeepVisionPolicy, args: argparse.Namespace, sync: Callable[[], None]
                 ) -> list[dict]:
    """End-to-end predict and forward-only latency per keep ratio (one ratio for the baseline)."""
    config = policy.model.config
    obs = observation(config)
    inputs = policy.processor.observations_to_inputs([obs], policy.device)
    dtype = next(policy.model.parameters()).dtype
    results = []
    for ratio in KEEP_RATIOS if config.expert is not None else (None,):  # the baseline prunes nothing
        if ratio is not None:
            policy.set_keep_ratio(ratio)
        label = f"{name} keep={ratio}"
        predict_ms = time_calls(lambda: policy.predict(obs), args.iters, args.warmup, sync, f"{label} predict")
        with torch.inference_mode():
            forward_ms = time_calls(lambda: policy.model(inputs, keep_ratio=ratio), args.iters, args.warmup, sync,
                                    f"{label} forward")
        results.append({"case": name, "device": str(policy.device), "dtype": str(dtype).removeprefix("torch."),
                        "keep_ratio": ratio, "kept_expert_tokens": policy.model.kept_patches_per_camera(ratio),
                        "prompt_tokens": int(inputs.input_ids.shape[1]), "batch": 1,
                        "predict": summary(predict_ms), "forward": summary(forward_ms),
                        "_raw_predict_ms": predict_ms})
    return results


def paper_policy(baseline: bool) -> DeepVisionPolicy:
    """Random-weight paper-size policy on CUDA in bf16 (no files: an 11 GB checkpoint is not worth writing)."""
    config = DeepVisionConfig.paper(baseline=baseline)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = DeepVisionVLA(config).to(torch.bfloat16).eval()
    processor = DeepVisionProcessor(config, build_byte_tokenizer(config.vlm.tokens), placeholder_norm_stats(config))
    return DeepVisionPolicy(LoadedCheckpoint(model=model, processor=processor), torch.device("cuda"))


def parameter_counts() -> dict[str, dict[str, int]]:
    counts = {}
    presets = {"tiny": DeepVisionConfig.tiny(), "tiny_baseline": DeepVisionConfig.tiny(baseline=True),
               "paper": DeepVisionConfig.paper(), "paper_baseline": DeepVisionConfig.paper(baseline=True)}
    for name, config in presets.items():
        with torch.device("meta"):
            counts[name] = DeepVisionVLA(config).parameter_counts()
    return counts


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']} keep={r['keep_ratio'] or '-'} ({r['device']})" for r in results]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(results) + 1.5))
    ax.boxplot([r["_raw_predict_ms"] for r in results], orientation="horizontal", tick_labels=labels, showfliers=False)
    ax.set_xscale("log")
    ax.set_xlabel("predict() latency per chunk [ms], log scale")
    ax.set_title("DeepVision-VLA end-to-end latency (batch 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_latency.json"))
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    counts = parameter_counts()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, baseline in [("tiny", False), ("tiny_baseline", True)]:
            config = DeepVisionConfig.tiny(baseline=baseline)
            policy = DeepVisionPolicy.from_checkpoint(create_random_checkpoint(Path(tmp) / name, config), "cpu")
            results += bench_policy(name, policy, args, sync=lambda: None)
    if torch.cuda.is_available():
        for name, baseline in [("paper", False), ("paper_baseline", True)]:
            policy = paper_policy(baseline)
            torch.cuda.reset_peak_memory_stats()
            case_results = bench_policy(name, policy, args, sync=torch.cuda.synchronize)
            for r in case_results:
                r["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            results += case_results
            del policy
            torch.cuda.empty_cache()

    print(f"{'parameters':<16}" + "".join(f"{k:>14}" for k in counts["paper"]))
    for name, row in counts.items():
        print(f"{name:<16}" + "".join(f"{v:>14,}" for v in row.values()))
    print(f"\n{'case':<16}{'device':>8}{'dtype':>10}{'keep':>6}{'K':>6}"
          f"{'predict p50':>13}{'p90':>9}{'forward p50':>13}")
    for r in results:
        print(f"{r['case']:<16}{r['device']:>8}{r['dtype']:>10}{r['keep_ratio'] or '-':>6}{r['kept_expert_tokens']:>6}"
              f"{r['predict']['p50_ms']:>11.2f}ms{r['predict']['p90_ms']:>7.2f}ms{r['forward']['p50_ms']:>11.2f}ms")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.out.with_suffix(".png"))
    report = {
        "created_unix_s": time.time(), "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "iters": args.iters, "warmup": args.warmup, "parameter_counts": counts,
        "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
