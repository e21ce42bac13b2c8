"""A DAgger session on the simulated arm: SimSession (policy, safety, sim, recorder) plus teleop_node,
with the DaggerSupervisor (vla_ros.sim.dagger) in the operator's seat.

During each recorded RunPolicy goal the supervisor reads the sim state (/sim/state) and, when the arm
strays from the expert's path or stalls, takes over exactly as a person would: it publishes the
expert's targets as a leader arm (/leader/joint_states) and engages teleop_node (/vla/teleop/engage);
the policy pauses, the recorder marks those frames source=intervention, and on release the policy
resumes from the measured position. Everything goes over ROS.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool

from vla_ros.config.sim import SimConfig
from vla_ros.ros import convert
from vla_ros.apps.session import EpisodeReport, SimSession
from vla_ros.ros.teleop_node import ENGAGE_SERVICE
from vla_ros.sim.dagger import DaggerSupervisor
from vla_ros.sim.state_json import state_from_dict

SUPERVISOR_RATE_HZ = 20.0


class DaggerSession(SimSession):
    def __init__(self, log_dir: Path, checkpoint_dir: str, dataset_root: str, device: str = "cpu",
                 deviation_rad: float = 0.3, stall_s: float = 4.0, startup_timeout_s: float = 180.0) -> None:
        self._deviation_rad, self._stall_s = deviation_rad, stall_s
        self._sim_state: dict[str, Any] | None = None
        self._supervisor: DaggerSupervisor | None = None
        self._episode: tuple[str, int] | None = None
        self._supervising = threading.Event()
        self._stop = threading.Event()
        self.takeover_reasons: list[str] = []
        super().__init__(log_dir, checkpoint_dir=checkpoint_dir, device=device, record=True,
                         dataset_root=dataset_root, startup_timeout_s=startup_timeout_s)
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="dagger_supervisor")
        self._thread.start()

    def _start_nodes(self, checkpoint_dir: str, device: str, dataset_root: str | None, backend: str) -> None:
        super()._start_nodes(checkpoint_dir, device, dataset_root, backend)
        self.procs.start("teleop_node", self.params_file, {"device": "leader"})

    def _make_client(self) -> None:
        super()._make_client()
        self.node.create_subscription(String, "/sim/state", self._on_sim_state, 1)
        self._leader_pub = self.node.create_publisher(JointState, "/leader/joint_states", 10)
        self._engage_pub = self.node.create_publisher(Bool, "/vla/teleop/engage", 10)

    def _wait_ready(self, timeout_s: float) -> None:
        super()._wait_ready(timeout_s)
        engage = self.node.create_client(SetBool, ENGAGE_SERVICE)
        try:
            self._wait(engage.service_is_ready, timeout_s, "teleop_node")
        finally:
            self.node.destroy_client(engage)
        self._wait(lambda: self._sim_state is not None, timeout_s, "the sim state")

    def _on_sim_state(self, msg: String) -> None:
        data = json.loads(msg.data)
        with self._lock:
            self._sim_state = data

    def _supervise(self) -> None:
        """At SUPERVISOR_RATE_HZ while an episode runs: decide, then drive the leader and the engage flag."""
        engaged, leader_ticks = False, 0
        while not self._stop.wait(1.0 / SUPERVISOR_RATE_HZ):
            if not self._supervising.is_set():
                if engaged:
                    self._engage_pub.publish(Bool(data=False))
                    engaged = False
                continue
            with self._lock:
                data, result = self._sim_state, dict(self._task_result)
            if data is None or self._supervisor is None:
                continue
            state = state_from_dict(data)
            if (state.task.task, state.task.seed) != self._episode:
                continue  # a state from before the reset
            action = self._supervisor.step(state, bool(result.get("success")) and result.get("seed") == state.task.seed)
            if action.reason:
                self.takeover_reasons.append(action.reason)
            if action.engaged:
                msg = convert.make_joint_state(tuple(data["joint_names"]), action.target,
                                               self.node.get_clock().now().nanoseconds)
                self._leader_pub.publish(msg)
                leader_ticks += 1
                if not engaged and leader_ticks >= 2:  # teleop_node engages only on a live leader
                    self._engage_pub.publish(Bool(data=True))
                    engaged = True
            else:
                leader_ticks = 0
                if engaged:
                    self._engage_pub.publish(Bool(data=False))
                    engaged = False

    def run_episode(self, task: str, seed: int, time_limit_s: float, record: bool | None = None,
                    progress=None) -> EpisodeReport:
        with self._lock:
            data = self._sim_state
        config = SimConfig(task=task, joint_names=tuple(data["joint_names"]),
                           max_velocity_rad_s=tuple(data["max_velocity_rad_s"]))
        self._episode = (task, seed)
        self._supervisor = DaggerSupervisor(config, task, deviation_rad=self._deviation_rad, stall_s=self._stall_s)

        def on_progress(elapsed_s: float, feedback_count: int) -> None:
            self._supervising.set()  # the sim was reset and the goal runs: from now on
            if progress is not None:
                progress(elapsed_s, feedback_count)

        try:
            report = super().run_episode(task, seed, time_limit_s, record=record, progress=on_progress)
        finally:
            self._supervising.clear()
            time.sleep(2.0 / SUPERVISOR_RATE_HZ)  # the supervisor thread releases teleop
        return report

    def close(self) -> None:
        self._stop.set()
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=2.0)
        super().close()
