"""Soak: the two-host stack running for minutes with three 640x480 cameras at 30 Hz.

    sudo python bench/bench_soak.py [--duration-s 600] [--episode-s 60] [--policy-host gpu|robot]

policy_node (GPU host; CPU inference here) replans every replan_period_s from camera 0 (resized to
the checkpoint's 240x320); safety_node drives the simulated arm at 50 Hz; recorder_node records all
three cameras, the joint state and the commands in back-to-back episodes of --episode-s, started and
stopped through its services. The cameras are synthetic publishers in their own process on the robot
host (a moving pattern with noise: compresses like a camera). Every 5 s the RSS of every process is
sampled. At the end: RSS growth per node, recorder dropped/stale frames per episode, the share of
chunks safety_node refused as stale, every episode validated (metadata, frame table, videos decoded).
Writes bench/results/soak.json and soak.png. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CAMERAS = 3
HEIGHT, WIDTH, RATE_HZ = 480, 640, 30.0
TOPICS = [f"/soak/cam{i}/image_raw" for i in range(CAMERAS)]
SAMPLE_PERIOD_S = 5.0


def publish_cameras(duration_s: float) -> None:
    """The camera process: CAMERAS x 640x480 rgb8 at RATE_HZ, stamped now, counted to stdout at exit."""
    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from bench.bench_recorder import synthetic_frames
    from vla_ros.ros import convert

    rclpy.init()
    node = rclpy.create_node("soak_cameras")
    qos = QoSProfile(depth=5)  # reliable, like sim_robot_node's camera: matches any subscriber
    pubs = [node.create_publisher(Image, t, qos) for t in TOPICS]
    pools = [synthetic_frames(30, HEIGHT, WIDTH, i) for i in range(CAMERAS)]
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sent, late = 0, 0
    period = 1.0 / RATE_HZ
    start = next_s = time.monotonic()
    while not stop and time.monotonic() - start < duration_s:
        now_ns = node.get_clock().now().nanoseconds
        for i, pub in enumerate(pubs):
            pub.publish(convert.rgb_to_image(pools[i][sent % 30], now_ns, f"cam{i}"))
        sent += 1
        next_s += period
        delay = next_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
            next_s = time.monotonic()  # keep the rate on average; never burst to catch up
    print(json.dumps({"frames_per_camera": sent, "late_ticks": late, "seconds": time.monotonic() - start}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def _call(node, srv_type, name: str, request, timeout_s: float = 15.0):
    client = node.create_client(srv_type, name)
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return future.result() if future.done() else None
    finally:
        node.destroy_client(client)


def _inside(args: argparse.Namespace) -> int:
    import psutil
    from tqdm import tqdm

    from vla_ros.apps.netns import current_spec
    from vla_ros.recording import LeRobotDatasetReader, validate_dataset
    from vla_ros.apps.two_host_session import TwoHostSession
    from vla_ros.apps.two_hosts_drills import Probe
    from vla_ros_interfaces.action import RunPolicy
    from vla_ros_interfaces.srv import StartEpisode, StopEpisode

    spec = current_spec()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # the camera process and the session share it
    out = args.out
    dataset = out / "soak_dataset"
    params = {"policy_node": {"camera_topics": f"[{TOPICS[0]}]"},
              "recorder_node": {"camera_topics": "[" + ", ".join(TOPICS) + "]",
                                "camera_keys": "[" + ", ".join(f"cam{i}" for i in range(CAMERAS)) + "]",
                                "camera_heights_px": f"[{', '.join([str(HEIGHT)] * CAMERAS)}]",
                                "camera_widths_px": f"[{', '.join([str(WIDTH)] * CAMERAS)}]",
                                "min_free_disk_mb": 256}}
    load_start = os.getloadavg()
    cams = subprocess.Popen([*spec.prefix("robot"), sys.executable, str(Path(__file__).resolve()), "--cameras-only",
                             "--duration-s", str(args.duration_s + 120)], stdout=subprocess.PIPE, text=True,
                            env=spec.env("robot"), start_new_session=True)
    rss: dict[str, list[tuple[float, float]]] = {}
    episodes: list[dict] = []
    try:
        with TwoHostSession(spec, out / "soak_logs", device="cpu", record=True, dataset_root=str(dataset),
                            policy_host=args.policy_host, node_params=params) as session:
            probe = Probe(session, spec)
            node = session.node
            procs = {name: psutil.Process(p.pid) for name, p in session.procs.children.items()}
            procs["cameras"] = psutil.Process(cams.pid)
            procs["client"] = psutil.Process()
            instruction = session.reset("pour", seed=0)
            send = session.action.send_goal_async(RunPolicy.Goal(instruction=instruction,
                                                                 time_limit_s=float(args.duration_s), record=False))
            while not send.done():
                time.sleep(0.05)
            result = send.result().get_result_async()
            t0 = time.monotonic()
            episode_start = None
            next_sample = t0
            bar = tqdm(total=int(args.duration_s), unit="s", desc="soak", file=sys.stdout, mininterval=5.0)
            while time.monotonic() - t0 < args.duration_s and not result.done():
                now = time.monotonic()
                if episode_start is None or now - episode_start >= args.episode_s:
                    if episode_start is not None:
                        stop = _call(node, StopEpisode, "/vla/recorder/stop_episode",
                                     StopEpisode.Request(keep=True, is_success=False, notes="soak"))
                        episodes.append({"t_s": now - t0, "stop": stop.message if stop else "no answer",
                                         "frames": int(stop.frame_count) if stop else 0})
                    started = _call(node, StartEpisode, "/vla/recorder/start_episode",
                                    StartEpisode.Request(task=instruction, source="policy"))
                    if started is None or not started.success:
                        raise RuntimeError(f"recorder refused an episode: {started.message if started else 'no answer'}")
                    episode_start = now
                if now >= next_sample:
                    for name, proc in procs.items():
                        try:
                            rss.setdefault(name, []).append((now - t0, proc.memory_info().rss / 2**20))
                        except psutil.NoSuchProcess:
                            pass
                    next_sample += SAMPLE_PERIOD_S
                bar.update(int(now - t0) - bar.n)
                time.sleep(0.2)
            bar.close()
            stop = _call(node, StopEpisode, "/vla/recorder/stop_episode",
                         StopEpisode.Request(keep=True, is_success=False, notes="soak end"))
            episodes.append({"t_s": time.monotonic() - t0, "stop": stop.message if stop else "no answer",
                             "frames": int(stop.frame_count) if stop else 0})
            while not result.done() and time.monotonic() - t0 < args.duration_s + 30:
                time.sleep(0.1)
            goal_result = result.result().result if result.done() else None
            window = probe.window(0.0, probe.now())
    finally:
        cams.send_signal(signal.SIGINT)
        try:
            cam_out, _ = cams.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            cams.kill()
            cam_out, _ = cams.communicate()
    cam_stats = json.loads(cam_out.strip().splitlines()[-1]) if cam_out.strip() else {}

    validation = validate_dataset(dataset)
    reader = LeRobotDatasetReader(dataset)
    per_episode = []
    for e in reader.episodes:
        rep = e.report
        stale = {k: v.get("stale_frames", v.get("stale", 0)) for k, v in rep.get("streams", {}).items()
                 if isinstance(v, dict)}
        per_episode.append({"episode": e.episode_index, "frames": e.length, "dropped_frames": rep.get("dropped_frames"),
                            "stale_by_stream": stale, "errors": rep.get("errors", [])})
    safety = window["safety_timing"]
    refused = [s for s in safety if s["accepted"] != "true"]
    growth = {}
    for name, series in rss.items():
        t, mb = np.array(series).T
        later = mb[t >= min(60.0, t[-1] / 2)]  # after warm-up (model load, first episode's encoders)
        growth[name] = {"start_mb": float(mb[0]), "end_mb": float(mb[-1]), "max_mb": float(mb.max()),
                        "after_warmup_min_mb": float(later.min()), "after_warmup_max_mb": float(later.max()),
                        "slope_mb_per_min_after_warmup": float(np.polyfit(t[t >= t[-1] / 2], mb[t >= t[-1] / 2], 1)[0] * 60)
                        if (t >= t[-1] / 2).sum() > 2 else None}
    results = {
        "duration_s": args.duration_s, "episode_s": args.episode_s, "policy_host": args.policy_host,
        "cameras": f"{CAMERAS} x {WIDTH}x{HEIGHT} rgb8 @ {RATE_HZ:g} Hz", "camera_publisher": cam_stats,
        "load_average_start": load_start, "load_average_end": os.getloadavg(), "cpu_count": os.cpu_count(),
        "goal": {"outcome": int(goal_result.outcome) if goal_result else None,
                 "reason": goal_result.reason if goal_result else "no result", "chunks": int(goal_result.chunk_count)
                 if goal_result else 0},
        "chunks_at_safety": len(safety), "chunks_refused": len(refused),
        "refused_share": len(refused) / max(1, len(safety)),
        "chunk_age_ms": {"p50": float(np.percentile([s["age_at_receipt_ms"] for s in safety], 50)) if safety else None,
                         "p99": float(np.percentile([s["age_at_receipt_ms"] for s in safety], 99)) if safety else None},
        "commands_sent": len(window["commands"]),
        "episodes": episodes, "episodes_read": per_episode,
        "validation": {"ok": validation.ok, "errors": validation.errors[:20], "warnings": validation.warnings[:20]},
        "rss_growth": growth, "rss_mb": rss,
        "chunk_ages": [(s["t"], s["age_at_receipt_ms"], s["accepted"]) for s in safety],
    }
    (out / "soak.json").write_text(json.dumps(results, indent=1, default=str))
    _plot(results, out / "soak.png")
    print(json.dumps({k: results[k] for k in ("goal", "chunks_at_safety", "chunks_refused", "refused_share",
                                              "chunk_age_ms", "camera_publisher", "load_average_start",
                                              "load_average_end")}, indent=1))
    for name, g in growth.items():
        print(f"  {name:<16} RSS {g['start_mb']:7.1f} -> {g['end_mb']:7.1f} MB (after warm-up "
              f"{g['after_warmup_min_mb']:.1f}..{g['after_warmup_max_mb']:.1f}, slope {g['slope_mb_per_min_after_warmup']})")
    for e in per_episode:
        print(f"  episode {e['episode']}: {e['frames']} frames, dropped {e['dropped_frames']}, stale {e['stale_by_stream']}")
    print(f"  dataset valid: {validation.ok} {validation.errors[:3]}")
    print(f"wrote {out / 'soak.json'} and {out / 'soak.png'}")
    return 0


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, series in results["rss_mb"].items():
        t, mb = np.array(series).T
        ax1.plot(t, mb, label=name)
    ax1.set_ylabel("RSS [MB]")
    ax1.set_title(f"soak: {results['cameras']}, {results['duration_s'] / 60:.0f} min, policy on {results['policy_host']} host")
    ax1.legend(fontsize=7, ncol=3)
    if results["chunk_ages"]:
        t, age, ok = zip(*results["chunk_ages"])
        ok = np.array(ok) == "true"
        ax2.scatter(np.array(t)[ok], np.array(age)[ok], s=2, label="accepted")
        ax2.scatter(np.array(t)[~ok], np.array(age)[~ok], s=6, color="red", label="refused")
    for e in results["episodes"]:
        ax2.axvline(e["t_s"], color="grey", lw=0.5)
    ax2.set_ylabel("chunk age at safety_node [ms]")
    ax2.set_xlabel("s (grey: episode boundaries)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    from vla_ros.apps.netns import current_spec
    from vla_ros.apps.two_hosts import run_on_robot_host

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--episode-s", type=float, default=60.0)
    parser.add_argument("--policy-host", choices=("gpu", "robot"), default="gpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results").resolve())
    parser.add_argument("--cameras-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cameras_only:
        publish_cameras(args.duration_s)
        return 0
    if current_spec() is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        return _inside(args)
    return run_on_robot_host([str(Path(__file__).resolve()), *argv, "--out", str(args.out.resolve())])


if __name__ == "__main__":
    sys.exit(main())
