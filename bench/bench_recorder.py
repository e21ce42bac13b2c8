"""Recorder throughput: N cameras + joint states + commands in real time into a DatasetWriter.

Producers run in their own threads at real rates (like ROS callbacks), stamped with the wall clock.
Reports frames written per second, dropped and stale frames, encoder queue fill, peak RSS, CPU and
finalisation time; writes JSON (bench/results/recorder.json) and a plot of queue fill and RSS.

    python bench/bench_recorder.py                      # 3 x 640x480 @ 30 Hz, joints @ 500 Hz, 20 s
    python bench/bench_recorder.py --codec mpeg4 --duration-s 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_ros.config.recorder import RecorderConfig, VideoConfig  # noqa: E402
from vla_ros.recording import (CameraSpec, DatasetSpec, DatasetWriter, LeRobotDatasetReader,  # noqa: E402
                               validate_dataset)

JOINTS = tuple(f"joint_{i}" for i in range(1, 7)) + ("gripper",)
NS = 1_000_000_000


def synthetic_frames(count: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """A moving scene (gradients + a bright square + sensor noise): compresses like a camera image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(count):
        img = np.stack([(x * 255 // w + 3 * i) % 256, (y * 255 // h) % 256, ((x + y) // 4 + seed * 40) % 256], -1)
        cy, cx = (h // 2 + int(h / 4 * np.sin(i / 5))), (w // 2 + int(w / 4 * np.cos(i / 5)))
        img[max(0, cy - 30):cy + 30, max(0, cx - 30):cx + 30] = 240
        img = img + rng.integers(-4, 5, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def run(args: argparse.Namespace) -> dict:
    cams = [CameraSpec(f"cam{i}", args.height, args.width) for i in range(args.cameras)]
    spec = DatasetSpec("bench_arm", args.fps, JOINTS, JOINTS, tuple(cams))
    opts = RecorderConfig(queue_size_frames=args.queue_size_frames, min_free_disk_mb=0,
                          video=VideoConfig(codec=args.codec, preset=args.preset))
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    pools = {c.key: synthetic_frames(30, args.height, args.width, i) for i, c in enumerate(cams)}
    writer = DatasetWriter(root, spec, opts)
    proc = psutil.Process()
    stop = threading.Event()
    samples: list[tuple[float, float, float]] = []  # (t_s, queue fill, rss MB)

    def paced(period_s: float, body) -> None:
        start = time.monotonic()
        k = 0
        while not stop.is_set():
            body(k)
            k += 1
            delay = start + k * period_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def camera(key: str) -> None:
        pool = pools[key]
        paced(1.0 / args.fps, lambda k: writer.add_image(key, pool[k % len(pool)], time.time_ns()))

    def joints() -> None:
        per_tick = max(1, args.joint_hz // 100)  # 10 ms ticks, several stamped messages each

        def tick(k: int) -> None:
            now = time.time_ns()
            for j in range(per_tick):
                t = now - (per_tick - 1 - j) * NS // args.joint_hz
                writer.add_joint_state(np.sin(np.arange(7) + t / NS), t)
        paced(0.01, tick)

    def commands() -> None:
        paced(0.01, lambda k: writer.add_command(np.cos(np.arange(7) + k / 100), time.time_ns()))

    def monitor() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            st = writer.status()
            samples.append((time.monotonic() - t0, st.queue_fill, proc.memory_info().rss / 2**20))
            time.sleep(0.1)

    writer.start_episode("benchmark", "teleop")
    threads = [threading.Thread(target=camera, args=(c.key,), daemon=True) for c in cams]
    threads += [threading.Thread(target=f, daemon=True) for f in (joints, commands, monitor)]
    cpu_start = proc.cpu_times()
    wall_start = time.monotonic()
    for t in threads:
        t.start()
    try:
        from tqdm import tqdm
        for _ in tqdm(range(int(args.duration_s)), desc="recording", unit="s"):
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    recorded_s = time.monotonic() - wall_start
    t_stop = time.monotonic()
    summary = writer.stop_episode(keep=True, is_success=True, notes="benchmark")
    finalise_s = time.monotonic() - t_stop
    cpu = proc.cpu_times()
    cpu_s = (cpu.user - cpu_start.user) + (cpu.system - cpu_start.system)
    validation = validate_dataset(root)
    reader = LeRobotDatasetReader(root)
    size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    expected = int(recorded_s * args.fps)
    return {
        "config": {"cameras": args.cameras, "height_px": args.height, "width_px": args.width, "fps": args.fps,
                   "joint_hz": args.joint_hz, "codec": args.codec, "preset": args.preset,
                   "queue_size_frames": args.queue_size_frames, "duration_s": round(recorded_s, 2),
                   "cpu_count": os.cpu_count()},
        "frames_written": summary.frame_count,
        "frames_expected": expected,
        "frames_per_s": round(summary.frame_count / recorded_s, 2),
        "camera_images_per_s": round(summary.frame_count * args.cameras / recorded_s, 1),
        "dropped_frames": summary.report["dropped_frames"],
        "stale_frames": {s: c["stale_frames"] for s, c in summary.report["streams"].items() if c["stale_frames"]},
        "joint_states_accepted": summary.report["streams"]["state"]["accepted"],
        "max_queue_fill": round(max((s[1] for s in samples), default=0.0), 3),
        "peak_rss_mb": round(max((s[2] for s in samples), default=0.0), 1),
        "cpu_percent_of_one_core": round(100 * cpu_s / (recorded_s + finalise_s), 1),
        "finalise_s": round(finalise_s, 2),
        "dataset_mb": round(size_mb, 1),
        "mb_per_minute": round(size_mb / recorded_s * 60, 1),
        "valid": validation.ok,
        "validation": str(validation),
        "read_back_frames": len(reader),
        "timeline": [[round(t, 2), round(q, 3), round(r, 1)] for t, q, r in samples],
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, q, rss = (np.array(v) for v in zip(*result["timeline"]))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, q * 100, label="fullest encoder queue [%]")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("queue fill [%]")
    ax2 = ax.twinx()
    ax2.plot(t, rss, color="tab:red", label="RSS [MB]")
    ax2.set_ylabel("RSS [MB]")
    c = result["config"]
    ax.set_title(f"recorder: {c['cameras']} x {c['width_px']}x{c['height_px']} @ {c['fps']} Hz, {c['codec']}; "
                 f"{result['dropped_frames']} dropped")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=20.0)
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--joint-hz", type=int, default=500)
    p.add_argument("--codec", default="h264", choices=("h264", "mpeg4", "av1"))
    p.add_argument("--preset", default="ultrafast")
    p.add_argument("--queue-size-frames", type=int, default=60)
    p.add_argument("--root", default="", help="dataset directory (default: a new temporary one)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "recorder.json"))
    args = p.parse_args()
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    rows = [(k, v) for k, v in result.items() if k not in ("timeline", "config", "validation")]
    print(f"\nrecorder benchmark ({result['config']})")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"  validation: {result['validation']}")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
