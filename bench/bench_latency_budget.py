"""Where the camera-to-chunk time goes: the latency budget, same host vs two hosts.

    sudo python bench/bench_latency_budget.py [--duration-s 20]

Three runs of one goal each on the simulated arm (320x240 camera at 15 Hz, policy every 0.1 s,
CPU): every node on one host (the reference, shared memory between processes); policy_node on the
GPU host with raw rgb8 images across the link; the same with JPEG CompressedImages across it.
Per chunk policy_node reports (/vla/policy/chunk_timing) the image's transport (stamp -> callback)
and wait (callback -> taken by a cycle), decode, preprocess, inference and publish; safety_node
(/vla/safety/chunk_timing) the chunk's age on receipt. The chunk's own transport is that age minus
everything policy_node accounts for. Prints p50/p99 per stage, writes
bench/results/latency_budget.json and .png. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("image_transport_ms", "image_wait_ms", "decode_ms", "preprocess_ms", "inference_ms", "publish_ms",
          "chunk_transport_ms")
RUNS = (("same host", "robot", "raw"), ("two hosts, raw", "gpu", "raw"), ("two hosts, JPEG", "gpu", "compressed"))


def budget(policy: list[dict], safety: list[dict]) -> dict[str, list[float]]:
    """Per-stage samples; chunk transport joins both topics on chunk_id."""
    out = {k: [p[k] for p in policy] for k in STAGES[:-1]}
    out["age_at_receipt_ms"] = [s["age_at_receipt_ms"] for s in safety]
    by_id = {p["chunk_id"]: p for p in policy}
    out["chunk_transport_ms"] = [
        s["age_at_receipt_ms"] - sum(by_id[s["chunk_id"]][k] for k in
                                     ("observation_age_ms", "decode_ms", "preprocess_ms", "inference_ms", "publish_ms"))
        for s in safety if s["chunk_id"] in by_id]
    return out


def _inside(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vla_ros.apps.netns import current_spec
    from vla_ros.apps.two_host_session import TwoHostSession
    from vla_ros.apps.two_hosts_drills import Probe

    spec = current_spec()
    results = {"duration_s": args.duration_s, "load_average_start": os.getloadavg(), "runs": {}}
    for label, policy_host, images in tqdm(RUNS, desc="runs", file=sys.stdout):
        params = {}
        if images == "compressed":
            params = {"sim_robot_node": {"camera.jpeg_quality": 80},
                      "policy_node": {"camera_topics": "[/camera/image_raw/compressed]"}}
        with TwoHostSession(spec, args.out / "logs" / policy_host / images, device="cpu", policy_host=policy_host,
                            node_params=params) as session:
            probe = Probe(session, spec)
            bytes_before = spec.link_bytes()
            goal = probe.goal(args.duration_s)
            time.sleep(0.5)
            window = probe.window(goal["start_s"], goal["end_s"] + 0.5)
            moved = spec.link_bytes()
        samples = budget(window["policy_timing"], window["safety_timing"])
        results["runs"][label] = {
            "policy_host": policy_host, "images": images, "outcome": goal["outcome"], "chunks": goal["chunks"],
            "link_mb": (moved["robot_to_gpu"] - bytes_before["robot_to_gpu"]) / 1e6,
            "stats": {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                          "mean": float(np.mean(v)), "n": len(v)}
                      for k, v in samples.items() if v},
            "samples": samples}
    results["load_average_end"] = os.getloadavg()
    (args.out / "latency_budget.json").write_text(json.dumps(results, indent=1))
    _report(results, args.out)
    return 0


def _report(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (*STAGES, "age_at_receipt_ms")
    labels = list(results["runs"])
    print(f"\nlatency budget per chunk, ms (p50 / p99); load average {results['load_average_start'][0]:.1f} "
          f"-> {results['load_average_end'][0]:.1f} on {os.cpu_count()} cores")
    print(f"{'stage':<22}" + "".join(f"{lab:>24}" for lab in labels))
    for k in keys:
        cells = []
        for lab in labels:
            s = results["runs"][lab]["stats"].get(k)
            cells.append(f"{s['p50']:8.1f} / {s['p99']:7.1f}" if s else "-")
        print(f"{k:<22}" + "".join(f"{c:>24}" for c in cells))
    for lab in labels:
        run = results["runs"][lab]
        print(f"{lab}: {run['outcome']}, {run['chunks']} chunks, {run['link_mb']:.1f} MB robot->gpu")

    # Means add up per chunk (age at receipt = the stages, by construction); percentiles do not.
    fig, ax = plt.subplots(figsize=(12, 4.5))
    left = np.zeros(len(labels))
    for k in STAGES:
        width = np.array([max(results["runs"][lab]["stats"].get(k, {}).get("mean", 0.0), 0.0) for lab in labels])
        ax.barh(labels, width, left=left, label=k.removesuffix("_ms"))
        left += width
    for q, marker in (("p50", "|"), ("p99", "x")):
        receipt = [results["runs"][lab]["stats"]["age_at_receipt_ms"][q] for lab in labels]
        ax.scatter(receipt, labels, marker=marker, s=300, color="black", label=f"chunk age at safety_node, {q}",
                   zorder=3)
    ax.set_xlabel("ms (mean of each stage, stacked)")
    ax.set_title(f"camera image -> chunk at safety_node (load average {results['load_average_start'][0]:.0f} "
                 f"on {os.cpu_count()} cores)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency_budget.png", dpi=120)
    print(f"wrote {out / 'latency_budget.json'} and {out / 'latency_budget.png'}")


def main(argv: list[str] | None = None) -> int:
    from vla_ros.apps.netns import current_spec
    from vla_ros.apps.two_hosts import run_on_robot_host

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=20.0, help="goal length per run")
    parser.add_argument("--out", type=Path, default=Path("bench/results").resolve())
    args = parser.parse_args(argv)
    if current_spec() is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        return _inside(args)
    return run_on_robot_host([str(Path(__file__).resolve()), *argv, "--out", str(args.out.resolve())])


if __name__ == "__main__":
    sys.exit(main())
