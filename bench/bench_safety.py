"""safety_node under CPU load: command spacing and the real-time envelope of what leaves it.

Starts safety_node (its own process, armed, JointTrajectory output) and N busy-loop processes that
load every core, then runs a following robot (its joint state is the newest command it received,
published at 100 Hz; like a controller it takes the newest command, never a backlog) and a policy
(10 Hz chunks of a motion that asks for twice the velocity limit, so the limiter works at the
limits all the time) for --duration-s seconds.

For every pair of consecutive commands it computes velocity and acceleration three ways:
  carried   over the timing the commands carry: header.stamp + time_from_start of the first point
            (what joint_trajectory_controller executes);
  left      over the times they really left safety_node (DDS source timestamps, written when the
            message is published: adds the node's compute-to-publish jitter under load);
  receipt   over the times this process received them (adds delivery and this process's own
            scheduling jitter: informational, it measures the bench as much as the node).
Reports spacing percentiles (in control periods) and the worst ratios to the limits; writes JSON
and a PNG (bench/results/safety.json, .png).

    python bench/bench_safety.py                       # 60 s, one busy process per core
    python bench/bench_safety.py --duration-s 20 --load-procs 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NS = 1_000_000_000
BUSY = "while True:\n    pass\n"


def _start_load(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]


def run(args: argparse.Namespace) -> dict:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from vla_ros.config.safety import SafetyConfig
    from vla_ros.control.limits import JointLimits
    from vla_ros.ros import convert
    from vla_ros.types import ActionChunk
    from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg

    cfg = SafetyConfig()
    limits = JointLimits.from_config(cfg)
    period_s = 1.0 / args.rate_hz
    velocity_limit = limits.velocity_bound_rad_s(period_s)
    accel_limit = limits.max_acceleration_rad_s2
    home = np.array([0.0, -0.12, 2.11, 0.0, 1.15, 0.0, 0.5])
    amplitude = np.array([0.4, 0.3, 0.3, 0.4, 0.4, 0.4, 0.3])
    omega = 2.0 * velocity_limit / amplitude  # peak plan velocity: twice the limit

    env = dict(os.environ, ROS_DOMAIN_ID=str(args.domain_id))
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    node_args = [sys.executable, "-m", "vla_ros.ros.safety_node", "--ros-args",
                 "-p", "start_armed:=true", "-p", f"control_rate_hz:={args.rate_hz}",
                 "-p", "output.status_rate_hz:=2.0"]
    log_path = Path(args.out).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    safety = subprocess.Popen(node_args, env=env, stdout=log, stderr=subprocess.STDOUT)
    load: list[subprocess.Popen] = []
    rclpy.init()
    node = rclpy.create_node("bench_robot")
    robot = {"positions": home.copy()}
    commands: list[tuple[int, int, int, float, np.ndarray]] = []  # receipt, source, stamp [ns], lead [s], positions
    lock = threading.Lock()
    names = list(cfg.joint_names)

    def record(msg: JointTrajectory, info: dict) -> None:
        received = time.time_ns()
        point = msg.points[0]
        lead = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        with lock:
            commands.append((received, info["source_timestamp"], convert.stamp_to_ns(msg.header.stamp), lead,
                             np.array(point.positions)))

    def follow(msg: JointTrajectory) -> None:
        with lock:
            robot["positions"] = np.array(msg.points[0].positions)  # the robot follows exactly

    joint_pub = node.create_publisher(JointState, cfg.joint_states_topic, qos_profile_sensor_data)
    chunk_pub = node.create_publisher(ActionChunkMsg, cfg.chunk_topic, 10)
    node.create_subscription(JointTrajectory, cfg.output.topic, record, 1000)
    # Like a controller, the robot takes the newest command (depth 1): it never works off a backlog.
    node.create_subscription(JointTrajectory, cfg.output.topic, follow, 1)

    def publish_joints() -> None:
        with lock:
            positions = robot["positions"].copy()
        msg = JointState(name=names, position=positions.tolist())
        msg.header.stamp = convert.ns_to_stamp(time.time_ns())
        joint_pub.publish(msg)

    chunk_id = [0]
    t0 = time.time_ns()

    def publish_chunk() -> None:
        now = time.time_ns()
        t = (now - t0) / NS + np.arange(16)[:, None] * 0.1
        rows = home + amplitude * np.sin(omega * t)
        chunk_id[0] += 1
        chunk_pub.publish(convert.chunk_to_msg(ActionChunk(chunk_id[0], now, "joint_position", tuple(names),
                                                           0.1, rows)))

    node.create_timer(0.01, publish_joints)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 30.0
        while not commands and time.monotonic() < deadline:  # the node runs from the measured position
            publish_chunk()
            time.sleep(0.1)
        if not commands:
            raise RuntimeError(f"safety_node sent no command within 30 s; see {log_path}")
        load = _start_load(args.load_procs)
        with lock:
            commands.clear()
        node.create_timer(0.1, publish_chunk)
        from tqdm import tqdm
        for _ in tqdm(range(int(args.duration_s)), desc=f"safety_node under {args.load_procs} busy process(es)",
                      unit="s"):
            time.sleep(1.0)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
        executor.shutdown()
        spinner.join(timeout=5.0)
        node.destroy_node()
        rclpy.shutdown()
        safety.terminate()
        try:
            safety.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            safety.kill()
            safety.wait()
        log.close()
    with lock:
        data = list(commands)
    return analyse(data, args, period_s, velocity_limit, accel_limit)


def _ratios(times_s: np.ndarray, positions: np.ndarray, velocity_limit: np.ndarray,
            accel_limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N-1,) worst velocity ratio per step and (N-2,) worst acceleration ratio, over all joints."""
    dt = np.diff(times_s)
    velocity = np.diff(positions, axis=0) / dt[:, None]
    accel = np.diff(velocity, axis=0) / dt[1:, None]
    return (np.abs(velocity) / velocity_limit).max(axis=1), (np.abs(accel) / accel_limit).max(axis=1)


def analyse(data: list, args: argparse.Namespace, period_s: float, velocity_limit: np.ndarray,
            accel_limit: np.ndarray) -> dict:
    received, left, stamps = (np.array([d[i] for d in data], dtype=np.int64) for i in range(3))
    leads = np.array([d[3] for d in data])
    positions = np.array([d[4] for d in data])
    due = (stamps - stamps[0]) / NS + leads  # seconds, relative (keeps float precision)
    arrival = (received - received[0]) / NS
    carried_v, carried_a = _ratios(due, positions, velocity_limit, accel_limit)
    left_v, left_a = _ratios((left - left[0]) / NS, positions, velocity_limit, accel_limit)
    receipt_v, receipt_a = _ratios(arrival, positions, velocity_limit, accel_limit)
    spacing_stamp = np.diff(stamps) / NS / period_s
    spacing_left = np.diff(left) / NS / period_s
    spacing_receipt = np.diff(received) / NS / period_s
    publish_delay_ms = (left - stamps) / 1e6
    raw = Path(args.out).with_name(Path(args.out).stem + "_commands.npz")
    np.savez_compressed(raw, received_ns=received, left_ns=left, stamp_ns=stamps, lead_s=leads, positions=positions)

    def pct(values: np.ndarray) -> dict:
        return {k: round(float(np.percentile(values, q)), 4) for k, q in
                (("min", 0), ("p1", 1), ("p50", 50), ("p99", 99), ("max", 100))}

    return {
        "config": {"duration_s": args.duration_s, "load_procs": args.load_procs, "cpu_count": os.cpu_count(),
                   "control_rate_hz": args.rate_hz, "velocity_limit_rad_s": velocity_limit.tolist(),
                   "accel_limit_rad_s2": accel_limit.tolist(), "plan_peak_velocity": "2 x limit"},
        "commands": len(data),
        "commands_per_s": round(len(data) / max(arrival[-1], 1e-9), 2),
        "spacing_by_stamp_periods": pct(spacing_stamp),
        "spacing_by_leaving_periods": pct(spacing_left),
        "spacing_by_receipt_periods": pct(spacing_receipt),
        "tick_to_publish_ms": pct(publish_delay_ms),
        "tick_to_receipt_ms": pct((received - stamps) / 1e6),
        "lead_s": sorted(set(round(x, 6) for x in leads.tolist())),
        "worst_velocity_ratio_carried": round(float(carried_v.max()), 6),
        "worst_accel_ratio_carried": round(float(carried_a.max()), 6),
        "worst_velocity_ratio_left": round(float(left_v.max()), 4),
        "worst_accel_ratio_left": round(float(left_a.max()), 4),
        "velocity_ratio_left": pct(left_v),
        "accel_ratio_left": pct(left_a),
        "worst_velocity_ratio_receipt": round(float(receipt_v.max()), 4),
        "worst_accel_ratio_receipt": round(float(receipt_a.max()), 4),
        "velocity_ratio_receipt": pct(receipt_v),
        "accel_ratio_receipt": pct(receipt_a),
        "series": {"t_s": np.round(arrival[1:], 4).tolist(), "velocity_carried": np.round(carried_v, 5).tolist(),
                   "velocity_left": np.round(left_v, 5).tolist(),
                   "accel_carried": np.round(carried_a, 5).tolist(),
                   "spacing_stamp": np.round(spacing_stamp, 4).tolist(),
                   "spacing_left": np.round(spacing_left, 4).tolist(),
                   "spacing_receipt": np.round(spacing_receipt, 4).tolist()},
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["series"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6))
    ax1.plot(s["t_s"], s["velocity_left"], lw=0.5, color="tab:orange", label="over times they left the node")
    ax1.plot(s["t_s"], s["velocity_carried"], lw=0.8, color="tab:blue", label="over carried timing")
    ax1.axhline(1.0, color="k", ls="--", lw=0.8)
    ax1.set_xlabel("time [s]")
    ax1.set_ylabel("worst joint |v| / limit")
    ax1.legend(loc="upper right")
    c = result["config"]
    ax1.set_title(f"safety_node at {c['control_rate_hz']:g} Hz under {c['load_procs']} busy process(es) "
                  f"on {c['cpu_count']} cores")
    bins = np.linspace(0.0, 3.0, 61)
    for key, label in (("spacing_stamp", "by stamp (tick)"), ("spacing_left", "by leaving the node"),
                       ("spacing_receipt", "by receipt here")):
        ax2.hist(np.clip(s[key], 0.0, 3.0), bins=bins, alpha=0.6, label=label)
    ax2.set_yscale("log")
    ax2.set_xlabel("spacing of consecutive commands [control periods] (clipped at 3)")
    ax2.set_ylabel("commands")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--load-procs", type=int, default=os.cpu_count() or 1, help="busy-loop processes")
    p.add_argument("--rate-hz", type=float, default=50.0)
    p.add_argument("--domain-id", type=int, default=random.randint(150, 230), help="ROS_DOMAIN_ID (isolated)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "safety.json"))
    args = p.parse_args()
    result = run(args)
    out = Path(args.out)
    out.write_text(json.dumps(result))
    plot(result, out.with_suffix(".png"))
    rows = [(k, v) for k, v in result.items() if k not in ("series", "config")]
    print(f"\nsafety benchmark ({result['config']})")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
