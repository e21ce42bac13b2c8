"""Start-up and stop times of every node, run as installed entry points (what ros2 run/launch start).

For each node: seconds from spawn to its `ready:` log line, and from the first SIGINT (or SIGTERM) to
the process exit, idle and busy (policy_node with a goal running or still loading, recorder_node while recording;
sim_robot_node runs throughout as the sensor source). Also policy_node's refusal of a checkpoint
whose config.json does not match (checked before torch and the weights). Writes
bench/results/lifecycle.json and lifecycle.png.

    source scripts/env.sh && python bench/bench_lifecycle.py            # 2 trials per measurement
    python bench/bench_lifecycle.py --trials 5 --out-dir /tmp/lifecycle
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENTRY_POINTS = REPO / "install" / "vla_ros" / "lib" / "vla_ros"


class Proc:
    """One node process; its output is scanned for the `ready:` line."""

    def __init__(self, node: str, log_dir: Path, *params: str) -> None:
        self.node = node
        self.log = log_dir / f"{node}-{time.monotonic_ns()}.log"
        args = [str(ENTRY_POINTS / node), "--ros-args", *[a for p in params for a in ("-p", p)]]
        self.t0 = time.monotonic()
        with open(self.log, "w") as out:
            self.p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        while time.monotonic() - self.t0 < timeout_s:
            if "ready:" in self.log.read_text(errors="replace"):
                return time.monotonic() - self.t0
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.node} exited with {self.p.returncode}: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"{self.node} not ready after {timeout_s} s")

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 60.0) -> tuple[float, int]:
        t = time.monotonic()
        self.p.send_signal(sig)
        try:
            code = self.p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            return float("nan"), -9
        return time.monotonic() - t, code

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()


def busy_policy_stop(node, log_dir: Path, sig: int) -> dict:
    """policy_node with a goal running on the sim's sensors: stop time and what the client received."""
    from rclpy.action import ActionClient
    from vla_ros_interfaces.action import RunPolicy

    proc = Proc("policy_node", log_dir, "device:=cpu")
    try:
        ready = proc.wait_ready()
        client = ActionClient(node, RunPolicy, "/vla/run_policy")
        assert client.wait_for_server(timeout_sec=30.0), "no action server"
        feedback = threading.Event()
        sent = client.send_goal_async(RunPolicy.Goal(instruction="pour the cup into the bowl"),
                                      feedback_callback=lambda _: feedback.set())
        while not sent.done():
            time.sleep(0.01)
        result = sent.result().get_result_async()
        if not feedback.wait(60.0):
            raise RuntimeError("no feedback from the goal")
        time.sleep(0.5)
        stop_s, code = proc.stop(sig)
        deadline = time.monotonic() + 5.0
        while not result.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        reason = result.result().result.reason if result.done() else "(no result)"
        return {"ready_s": ready, "stop_s": stop_s, "exit_code": code, "result": reason}
    finally:
        proc.kill()


def busy_recorder_stop(node, log_dir: Path, root: Path, sig: int) -> dict:
    from std_msgs.msg import Float64MultiArray
    from vla_ros_interfaces.srv import StartEpisode

    proc = Proc("recorder_node", log_dir, f"dataset_root:={root}", "command_type:=float64_array",
                "command_topic:=/bench/commands", "min_free_disk_mb:=0")
    pub = node.create_publisher(Float64MultiArray, "/bench/commands", 10)
    stop_cmds = threading.Event()

    def commands() -> None:
        while not stop_cmds.wait(1 / 30):
            pub.publish(Float64MultiArray(data=[0.0] * 7))

    threading.Thread(target=commands, daemon=True).start()
    try:
        ready = proc.wait_ready()
        client = node.create_client(StartEpisode, "/vla/recorder/start_episode")
        assert client.wait_for_service(timeout_sec=30.0)
        future = client.call_async(StartEpisode.Request(task="bench", source="teleop"))
        while not future.done():
            time.sleep(0.01)
        assert future.result().success, future.result().message
        time.sleep(3.0)
        stop_s, code = proc.stop(sig)
        return {"ready_s": ready, "stop_s": stop_s, "exit_code": code}
    finally:
        stop_cmds.set()
        proc.kill()


def refusal(log_dir: Path) -> dict:
    proc = Proc("policy_node", log_dir, "image_height_px:=100")
    code = proc.p.wait(timeout=300)
    return {"refused_after_s": time.monotonic() - proc.t0, "exit_code": code,
            "message": proc.log.read_text().strip()[-300:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench_lifecycle_"))

    import rclpy
    from tqdm import tqdm

    from vla_ros.ros.executor import MultiThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("bench_lifecycle")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    results: dict[str, list[dict]] = {}
    sim = Proc("sim_robot_node", log_dir)
    try:
        results["sim_robot_node (ready)"] = [{"ready_s": sim.wait_ready()}]
        plan = []
        for trial in range(args.trials):
            sig = (signal.SIGINT, signal.SIGTERM)[trial % 2]
            for name in ("safety_node", "scripted_teleop_node", "recorder_node", "policy_node"):
                plan.append((f"{name} idle", name, sig))
            plan.append(("policy_node goal running", "busy_policy", sig))
            plan.append(("policy_node loading (signal at 5 s)", "loading_policy", sig))
            plan.append(("recorder_node recording", "busy_recorder", sig))
        plan.append(("policy_node contract refusal", "refusal", None))
        for label, what, sig in tqdm(plan, desc="lifecycle"):
            if what == "busy_policy":
                row = busy_policy_stop(node, log_dir, sig)
            elif what == "busy_recorder":
                row = busy_recorder_stop(node, log_dir, Path(tempfile.mkdtemp(prefix="bench_ds_")), sig)
            elif what == "loading_policy":
                proc = Proc("policy_node", log_dir)
                try:
                    time.sleep(5.0)  # importing torch and transformers, building the model
                    assert "ready:" not in proc.log.read_text(), "ready within 5 s: nothing was loading"
                    row = {}
                    row["stop_s"], row["exit_code"] = proc.stop(sig)
                finally:
                    proc.kill()
            elif what == "refusal":
                row = refusal(log_dir)
            else:
                extra = (("min_free_disk_mb:=0", f"dataset_root:={tempfile.mkdtemp(prefix='bench_ds_')}")
                         if what == "recorder_node" else ())
                proc = Proc(what, log_dir, *extra)
                try:
                    row = {"ready_s": proc.wait_ready()}
                    row["stop_s"], row["exit_code"] = proc.stop(sig)
                finally:
                    proc.kill()
            if sig is not None:
                row["signal"] = signal.Signals(sig).name
            results.setdefault(label, []).append(row)
        stop_s, code = sim.stop(signal.SIGINT)
        results["sim_robot_node idle"] = [{"stop_s": stop_s, "exit_code": code, "signal": "SIGINT"}]
    finally:
        sim.kill()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()

    summary = {}
    for label, rows in results.items():
        entry = {"trials": rows}
        for key in ("ready_s", "stop_s", "refused_after_s"):
            values = [r[key] for r in rows if key in r]
            if values:
                entry[f"{key}_median"] = statistics.median(values)
                entry[f"{key}_max"] = max(values)
        summary[label] = entry
        figures = ", ".join(f"{k} {v:.2f}" for k, v in entry.items() if k != "trials")
        print(f"  {label:32s} {figures}")
    meta = {"cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "note": "installed entry points"}
    (out / "lifecycle.json").write_text(json.dumps({"meta": meta, "results": summary}, indent=2))
    _plot(summary, out / "lifecycle.png")
    print(f"wrote {out / 'lifecycle.json'} and {out / 'lifecycle.png'}")
    return 0


def _plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(summary)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.5), sharey=True)
    for ax, key, title in ((axes[0], "ready_s", "spawn -> ready [s]"), (axes[1], "stop_s", "signal -> exit [s]")):
        for i, label in enumerate(labels):
            values = [r[key] for r in summary[label]["trials"] if key in r]
            if label.endswith("refusal"):
                values = [r["refused_after_s"] for r in summary[label]["trials"]] if key == "ready_s" else []
            ax.scatter(values, [i] * len(values), color="tab:blue")
        if key == "stop_s":
            ax.axvline(2.0, color="tab:red", linestyle="--", label="2 s promise")
            ax.legend()
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
