"""Fault drills on the two-host split: what a real deployment sees, each with what happened.

    sudo python -m vla_ros.apps.two_hosts_drills --output DIR [--drills lossy_link link_cut ...]

One TwoHostSession (policy_node on the GPU host, the rest and this client on the robot host) runs
the drills in order and writes DIR/drills.json: per drill the goal outcomes and reasons, every
command sent to the robot, safety_node's states and counters, and the latency-budget messages.
Tests (test/ros/test_two_hosts.py) judge the JSON; this module only makes the faults happen:

  baseline           one goal on a clean link
  lossy_link         random loss on both ends (iptables statistic) and a rate limit (tbf: a queue
                     that delays and then tail-drops; this kernel has no netem) during a goal
  link_cut           the link goes down for 2 s mid-goal and comes back; then another goal
  frozen_camera      the camera keeps publishing its last frame with the same stamp
  resolution_switch  the camera switches from its size to 640x480 mid-goal
  policy_killed      SIGKILL to policy_node mid-goal while recording; the operator stops the episode

Each fault starts once the goal has produced a few chunks (not at a fixed time: on a loaded machine
the first chunk can take seconds). The policy and the recorder read the camera through a relay in this process (the "camera driver"
of the robot host), which is how the frozen and resized frames are made.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

DRILLS = ("baseline", "lossy_link", "link_cut", "frozen_camera", "resolution_switch", "policy_killed")
RELAY_TOPIC = "/camera/relay"
LOSS_PROBABILITY = 0.02
RATE_KBIT = 20_000  # raw 320x240 rgb8 at 15 Hz needs ~28 Mbit/s: the queue fills, delays, then drops


def _kv(msg) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}


class Probe:
    """The robot host's view of a session: commands, safety status and both latency-budget topics,
    stamped with seconds since the probe started; goals sent and timed. (For drills and benches.)"""

    def __init__(self, session, spec) -> None:
        import cv2
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import qos_profile_sensor_data
        from trajectory_msgs.msg import JointTrajectory

        from vla_ros.ros import convert

        self._cv2, self._convert = cv2, convert
        self.session, self.spec = session, spec
        node = session.node
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._goal_start = 0.0
        self.commands: list[tuple[float, list[float]]] = []
        self.status: list[tuple[float, dict[str, str]]] = []
        self.policy_timing: list[dict[str, Any]] = []
        self.safety_timing: list[dict[str, Any]] = []
        node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_command,
                                 qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, "/vla/safety/status", self._on_status, 10)
        node.create_subscription(DiagnosticArray, "/vla/policy/chunk_timing",
                                 lambda m: self._on_timing(self.policy_timing, m), 50)
        node.create_subscription(DiagnosticArray, "/vla/safety/chunk_timing",
                                 lambda m: self._on_timing(self.safety_timing, m), 50)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _on_command(self, msg) -> None:
        if msg.points:
            stamp_s = self._convert.stamp_to_ns(msg.header.stamp) * 1e-9  # safety_node's send time
            with self._lock:
                self.commands.append((self.now(), [stamp_s, *(float(p) for p in msg.points[0].positions)]))

    def _on_status(self, msg) -> None:
        with self._lock:
            self.status.append((self.now(), _kv(msg)))

    def _on_timing(self, store: list, msg) -> None:
        values = _kv(msg)
        with self._lock:
            store.append({"t": self.now(), **{k: (v if k == "accepted" else float(v)) for k, v in values.items()}})

    # -- goals --
    def goal(self, seconds: float, record: bool = False,
             during: Callable[[float], None] | None = None) -> dict[str, Any]:
        from vla_ros.apps.session import OUTCOMES
        from vla_ros_interfaces.action import RunPolicy

        instruction = self.session.reset("pour", seed=1)
        start = self._goal_start = self.now()
        send = self.session.action.send_goal_async(RunPolicy.Goal(
            instruction=instruction, time_limit_s=float(seconds), max_chunks=0, record=record))
        handle = self._until(send.done, 30.0) and send.result()
        if not handle or not handle.accepted:
            return {"start_s": start, "end_s": self.now(), "outcome": "not accepted", "reason": "", "chunks": 0}
        result = handle.get_result_async()
        while not result.done():
            if during is not None:
                during(self.now() - start)
            if self.now() - start > seconds + 30.0:
                return {"start_s": start, "end_s": self.now(), "outcome": "no result", "reason": "", "chunks": 0}
            time.sleep(0.02)
        r = result.result().result
        return {"start_s": start, "end_s": self.now(), "outcome": OUTCOMES.get(r.outcome, "unknown"),
                "reason": r.reason, "chunks": int(r.chunk_count), "episode_id": r.episode_id}

    def chunks_in_goal(self) -> int:
        """Chunks policy_node reported since the running goal was sent."""
        with self._lock:
            return sum(1 for d in self.policy_timing if d["t"] >= self._goal_start)

    @staticmethod
    def _until(predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def reaction(self, fault_s: float) -> dict[str, float | None]:
        """Seconds from a fault to safety_node's first hold status and to its last command after it
        (status arrives at output.status_rate_hz, so the first is that coarse)."""
        with self._lock:
            hold = next((t for t, s in self.status if t >= fault_s and s.get("state") == "hold"), None)
            last = max((t for t, _ in self.commands if t >= fault_s), default=None)
        return {"fault_to_hold_s": None if hold is None else hold - fault_s,
                "fault_to_last_command_s": None if last is None else last - fault_s}

    def window(self, start: float, end: float) -> dict[str, Any]:
        """What safety_node did and said between `start` and `end` (drill-relative seconds)."""
        with self._lock:
            commands = [(t, c) for t, c in self.commands if start <= t <= end]
            status = [(t, s) for t, s in self.status if start <= t <= end]
            policy = [d for d in self.policy_timing if start <= d["t"] <= end]
            safety = [d for d in self.safety_timing if start <= d["t"] <= end]
        # commands: (drill time, [send stamp s, positions...])
        return {"commands": commands, "states": sorted({(s.get("state", ""), s.get("hold_reason", ""))
                                                        for _, s in status}),
                "status_first": status[0][1] if status else {}, "status_last": status[-1][1] if status else {},
                "policy_timing": policy, "safety_timing": safety}



class Drills(Probe):
    """The drills, with the robot host's camera driver (a relay that can freeze or resize)."""

    def __init__(self, session, spec, images: str) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        super().__init__(session, spec)
        self.images = images
        self.relay_mode = "pass"  # pass | frozen | resize
        self._frozen = None
        node = session.node
        self._raw_pub = node.create_publisher(Image, RELAY_TOPIC, qos_profile_sensor_data)
        self._jpeg_pub = node.create_publisher(CompressedImage, RELAY_TOPIC + "/compressed", qos_profile_sensor_data)
        node.create_subscription(Image, "/camera/image_raw", self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg) -> None:
        with self._lock:
            mode = self.relay_mode
            if mode == "frozen":
                self._frozen = self._frozen or msg  # the last frame before the freeze, stamp and all
                msg = self._frozen
            else:
                self._frozen = None
        if mode == "resize":
            rgb = self._cv2.resize(self._convert.image_to_rgb(msg), (640, 480), interpolation=self._cv2.INTER_LINEAR)
            msg = self._convert.rgb_to_image(rgb, self._convert.stamp_to_ns(msg.header.stamp), msg.header.frame_id)
        self._raw_pub.publish(msg)  # the recorder on this host reads the raw images
        if self.images == "compressed":  # and the policy on the other host the JPEG ones
            rgb = self._convert.image_to_rgb(msg)
            self._jpeg_pub.publish(self._convert.rgb_to_compressed(
                rgb, self._convert.stamp_to_ns(msg.header.stamp), msg.header.frame_id, 80))

    def baseline(self) -> dict[str, Any]:
        goal = self.goal(4.0)
        return {"goals": [goal], **self.window(goal["start_s"], goal["end_s"])}

    def lossy_link(self) -> dict[str, Any]:
        def during(t: float) -> None:
            if self.chunks_in_goal() >= 3 and not applied:
                self.spec.set_loss(LOSS_PROBABILITY)
                self.spec.set_rate(RATE_KBIT)
                applied.append(self.now())
        applied: list[float] = []
        try:
            goal = self.goal(5.0, during=during)
        finally:
            self.spec.clear_faults()
        return {"goals": [goal], "loss_probability": LOSS_PROBABILITY, "rate_kbit": RATE_KBIT,
                "fault_s": applied, **self.window(goal["start_s"], goal["end_s"])}

    def link_cut(self) -> dict[str, Any]:
        events: list[tuple[str, float]] = []

        def during(t: float) -> None:
            if self.chunks_in_goal() >= 5 and not events:
                self.spec.set_link(False)
                events.append(("down", self.now()))
            elif len(events) == 1 and self.now() - events[0][1] >= 2.0:
                self.spec.set_link(True)
                events.append(("up", self.now()))
        try:
            first = self.goal(6.0, during=during)
        finally:
            self.spec.set_link(True)
        second = self.goal(3.0)
        return {"goals": [first, second], "events": events, **self.reaction(events[0][1]),
                **self.window(first["start_s"], second["end_s"])}

    def _camera_drill(self, mode: str) -> dict[str, Any]:
        switched: list[float] = []

        def during(t: float) -> None:
            if self.chunks_in_goal() >= 5 and not switched:
                with self._lock:
                    self.relay_mode = mode
                switched.append(self.now())
        try:
            goal = self.goal(6.0, record=True, during=during)
        finally:
            with self._lock:
                self.relay_mode = "pass"
        return {"goals": [goal], "switched_s": switched, **(self.reaction(switched[0]) if switched and mode == "frozen" else {}),
                **self.window(goal["start_s"], goal["end_s"] + 1.0)}

    def frozen_camera(self) -> dict[str, Any]:
        return self._camera_drill("frozen")

    def resolution_switch(self) -> dict[str, Any]:
        return self._camera_drill("resize")

    def policy_killed(self) -> dict[str, Any]:
        from vla_ros_interfaces.srv import StopEpisode

        killed: list[float] = []
        proc = self.session.procs.children["policy_node"]

        def during(t: float) -> None:
            if self.chunks_in_goal() >= 5 and not killed:
                os.kill(proc.pid, signal.SIGKILL)  # `ip netns exec` execs the node: this is its pid
                killed.append(self.now())
            if killed and self.now() - killed[0] > 3.0:
                raise TimeoutError("drill over")  # the result never comes: the server is gone
            if not killed and t > 30.0:
                raise TimeoutError("the goal never produced chunks")

        start = self.now()
        goal: dict[str, Any] = {"start_s": start, "outcome": "policy host lost", "reason": "", "chunks": 0}
        try:
            self.goal(8.0, record=True, during=during)
        except TimeoutError:
            pass
        goal["end_s"] = self.now()
        # The operator on the robot host sees the policy gone and ends the episode (kept: data is data).
        client = self.session.node.create_client(StopEpisode, "/vla/recorder/stop_episode")
        stop = {"success": False, "message": "service not available"}
        if client.wait_for_service(timeout_sec=5.0):
            future = client.call_async(StopEpisode.Request(keep=True, is_success=False, notes="policy host lost"))
            if self._until(future.done, 10.0) and future.result() is not None:
                stop = {"success": bool(future.result().success), "message": future.result().message}
        return {"goals": [goal], "killed_s": killed, "stop_episode": stop, "policy_exit": proc.wait(timeout=5.0),
                **(self.reaction(killed[0]) if killed else {}),
                **self.window(start, self.now())}


def _inside(args: argparse.Namespace) -> int:
    from vla_ros.apps.netns import current_spec
    from vla_ros.apps.two_host_session import TwoHostSession

    spec = current_spec()
    out = args.output.resolve()
    topic = RELAY_TOPIC + ("/compressed" if args.images == "compressed" else "")
    node_params = {"policy_node": {"camera_topics": f"[{topic}]", "observation_wait_s": 2.0},
                   "recorder_node": {"camera_topics": f"[{RELAY_TOPIC}]"}}
    report: dict[str, Any] = {"images": args.images, "drills": {}}
    with TwoHostSession(spec, out / "logs", checkpoint_dir=args.checkpoint, device="cpu", record=True,
                        dataset_root=str(out / "dataset"), node_params=node_params) as session:
        drills = Drills(session, spec, args.images)
        for name in args.drills:
            print(f"drill {name} ...", flush=True)
            t0 = time.monotonic()
            report["drills"][name] = getattr(drills, name)()
            summary = [(g["outcome"], g["reason"]) for g in report["drills"][name]["goals"]]
            print(f"drill {name}: {summary} ({time.monotonic() - t0:.1f} s)", flush=True)
    report["dataset"] = str(out / "dataset")
    (out / "drills.json").write_text(json.dumps(report, indent=1, default=str))
    print_table(report)
    return 0


def print_table(report: dict[str, Any]) -> None:
    """One line per drill: outcomes, chunks, chunk age at safety_node, chunks refused, holds seen."""
    print(f"\n{'drill':<18} {'goal outcomes (reason)':<60} {'age p50/max ms':>15} {'refused':>8}  "
          "fault->hold/last cmd s  holds")
    for name, d in report["drills"].items():
        goals = "; ".join(f"{g['outcome']}" + (f" ({g['reason'][:40]})" if g["outcome"] != "completed" and g["reason"]
                                               else "") for g in d["goals"])
        ages = [t["age_at_receipt_ms"] for t in d["safety_timing"]]
        age = f"{sorted(ages)[len(ages) // 2]:.0f}/{max(ages):.0f}" if ages else "-"
        first, last = d["status_first"], d["status_last"]
        refused = sum(int(last.get(k, 0)) - int(first.get(k, 0)) for k in ("dropped_chunks", "rejected_chunks"))
        holds = ",".join(sorted({h for s, h in d["states"] if s == "hold"})) or "-"
        react = "/".join("-" if d.get(k) is None else f"{d[k]:.2f}" for k in ("fault_to_hold_s", "fault_to_last_command_s"))
        print(f"{name:<18} {goals:<60} {age:>15} {refused:>8}  {react:>22}  {holds}")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("outputs/two_hosts_drills"))
    parser.add_argument("--drills", nargs="+", choices=DRILLS, default=list(DRILLS))
    parser.add_argument("--images", choices=("raw", "compressed"), default="raw",
                        help="what crosses the link: rgb8 Images or JPEG CompressedImages")
    parser.add_argument("--checkpoint", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from vla_ros.apps.netns import current_spec
    from vla_ros.apps.two_hosts import run_on_robot_host

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _args(argv)
    if current_spec() is not None:
        return _inside(args)
    return run_on_robot_host(["-m", "vla_ros.apps.two_hosts_drills", *argv])


if __name__ == "__main__":
    sys.exit(main())
