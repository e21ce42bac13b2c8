"""Per-chunk latency of the serving backends in one run: torch eager, torch fast path, ONNX Runtime.

    python bench/bench_backends.py [--out bench/results/backends.json] [--iters 100] [--threads N]

Cases: the tiny config (random weights) and the shipped checkpoint models/deepvision_sim, on the CPU; on CUDA
too when torch sees one (torch in bf16, ONNX Runtime on TensorRT/CUDA when onnxruntime-gpu is installed). Each
variant is a real policy (`build_policy`) timed end to end through predict() (preprocessing, model, actions
back in physical units). The variants of a case are called round-robin, one call each per iteration, so a
noisy shared machine slows them alike. Also recorded: ready time (policy construction in this process; for
ONNX Runtime once with an empty cache, i.e. export + check, and once from the cache), the ONNX chunk's error
against torch eager and whether both kept the same expert patches. Writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from bench.bench_model import observation, summary  # noqa: E402
from vla_ros.model.checkpoint import create_random_checkpoint  # noqa: E402
from vla_ros.model.configuration import DeepVisionConfig  # noqa: E402
from vla_ros.model.onnx_policy import OnnxPolicy  # noqa: E402
from vla_ros.model.policy import build_policy  # noqa: E402
from vla_ros.paths import default_checkpoint_dir  # noqa: E402

VARIANTS = ("torch_eager", "torch_fast", "onnxruntime")


THREADS: int | None = None  # --threads: both torch and ONNX Runtime; None: each library's default


def build(variant: str, checkpoint: Path, device: str, cache: Path):
    if variant == "onnxruntime":
        return OnnxPolicy(checkpoint, device=device, threads=THREADS, cache_root=cache)
    return build_policy(checkpoint, device=device, backend="torch", fast_inference=variant == "torch_fast")


def timed_build(variant: str, checkpoint: Path, device: str, cache: Path):
    start = time.perf_counter()
    policy = build(variant, checkpoint, device, cache)
    return policy, time.perf_counter() - start


def bench_case(name: str, checkpoint: Path, device: str, iters: int, warmup: int, cache: Path) -> dict:
    cache = cache / f"{name}_{device}"  # empty: the first ONNX Runtime build exports, the second reads the cache
    policies, ready_s = {}, {}
    for variant in VARIANTS:
        policies[variant], ready_s[variant] = timed_build(variant, checkpoint, device, cache)
    _, ready_s["onnxruntime_cached"] = timed_build("onnxruntime", checkpoint, device, cache)
    obs = observation(policies["torch_eager"].model.config, instruction="pour the cup into the bowl")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    chunks = {v: p.predict(obs).actions for v, p in policies.items()}
    kept = {v: p.kept_patch_indices(obs) for v, p in policies.items()}
    for _ in range(warmup):
        for policy in policies.values():
            policy.predict(obs)
    times_ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in tqdm(range(iters), desc=f"{name} on {device}", leave=False):
        for variant, policy in policies.items():  # round-robin: load changes hit every variant alike
            sync()
            start = time.perf_counter()
            policy.predict(obs)
            sync()
            times_ms[variant].append((time.perf_counter() - start) * 1e3)
    scale = float(np.abs(chunks["torch_eager"]).max())
    ort_policy = policies["onnxruntime"]
    return {
        "case": name, "checkpoint": str(checkpoint), "device": device, "provider": ort_policy.provider,
        "torch_dtype": str(next(policies["torch_eager"].model.parameters()).dtype).removeprefix("torch."),
        "onnx_dtype": "float32", "kept_expert_tokens": ort_policy.kept_patches_per_camera(),
        "ready_s": {k: round(v, 3) for k, v in ready_s.items()},
        "onnx_vs_eager": {"max_abs_error": float(np.abs(chunks["onnxruntime"] - chunks["torch_eager"]).max()),
                          "max_rel_error": float(np.abs(chunks["onnxruntime"] - chunks["torch_eager"]).max()) / scale,
                          "same_kept_patches": bool(np.array_equal(kept["onnxruntime"], kept["torch_eager"]))},
        "predict": {v: summary(t) for v, t in times_ms.items()},
        "speedup_p50_vs_eager": {v: statistics.median(times_ms["torch_eager"]) / statistics.median(t)
                                 for v, t in times_ms.items()},
        "_raw_ms": times_ms,
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.9 + 1.1 * len(results)))
    labels, data, colors = [], [], []
    palette = {"torch_eager": "tab:gray", "torch_fast": "tab:blue", "onnxruntime": "tab:orange"}
    for r in results:
        for variant in VARIANTS:
            stats = r["predict"][variant]
            labels.append(f"{r['case']} {r['device']} {variant}")
            data.append(r["_raw_ms"][variant])
            colors.append(palette[variant])
            ax.annotate(f"p50 {stats['p50_ms']:.1f}, p99 {stats['p99_ms']:.1f} ms", (stats["p99_ms"], len(data)),
                        xytext=(6, -3), textcoords="offset points", fontsize=7)
    parts = ax.boxplot(data, orientation="horizontal", showfliers=False, patch_artist=True, tick_labels=labels,
                       whis=(1, 99))
    for patch, color in zip(parts["boxes"], colors):
        patch.set_facecolor(color)
    ax.set_xscale("log")
    ax.set_xlabel("predict() per chunk [ms], log scale (box: quartiles, whiskers: p1-p99)")
    ax.set_title("Serving backends, batch 1, measured round-robin in one run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/backends.json"))
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of torch and ONNX Runtime (default: each library's own)")
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [("tiny", create_random_checkpoint(root / "tiny", DeepVisionConfig.tiny())),
                 ("deepvision_sim", default_checkpoint_dir())]
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for name, checkpoint in cases:
                results.append(bench_case(name, checkpoint, device, args.iters, args.warmup, root / "onnx"))

    print(f"\n{'case':<16}{'device':>7}{'variant':>13}{'p50':>10}{'p99':>10}{'vs eager':>10}{'ready':>9}")
    for r in results:
        for variant in VARIANTS:
            s = r["predict"][variant]
            ready = r["ready_s"]["onnxruntime_cached" if variant == "onnxruntime" else variant]
            print(f"{r['case']:<16}{r['device']:>7}{variant:>13}{s['p50_ms']:>8.2f}ms{s['p99_ms']:>8.2f}ms"
                  f"{r['speedup_p50_vs_eager'][variant]:>9.2f}x{ready:>8.2f}s")
        e = r["onnx_vs_eager"]
        print(f"{'':<16}ONNX Runtime ({r['provider']}) vs eager: max rel error {e['max_rel_error']:.1e}, same kept "
              f"patches {e['same_kept_patches']}; ready with export {r['ready_s']['onnxruntime']:.2f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.out.with_suffix(".png"))
    report = {
        "created_unix_s": time.time(), "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": ort.__version__, "ort_providers": ort.get_available_providers(),
        "torch_threads": torch.get_num_threads(), "ort_threads": THREADS or "default", "cpu_count": os.cpu_count(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "iters": args.iters, "warmup": args.warmup,
        "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
