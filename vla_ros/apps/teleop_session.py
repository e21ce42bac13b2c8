"""A demonstration session on the simulated arm: sim_robot_node -> recorder_node <- scripted_teleop_node.

The same client as SimSession (nodes as processes, sim reset by task and seed), with the scripted
expert in the operator's seat instead of policy_node: each `run_demonstration` resets the sim and
has scripted_teleop_node record one episode through the recorder's services. With device "leader"
or "joy" the expert plays that device for teleop_node, whose chunks go through safety_node, exactly
the path a person's teleoperation takes; with "command" it commands the arm directly.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from vla_ros.ros.scripted_teleop_node import RECORDER_START_SERVICE, RESULT_TOPIC, START_SERVICE
from vla_ros.apps.session import SessionError, SimSession
from vla_ros.ros.teleop_node import ENGAGE_SERVICE
from vla_ros_interfaces.srv import StartEpisode


class TeleopSession(SimSession):
    """Start sim, recorder and scripted teleop nodes; then `run_demonstration(task, seed)` per episode."""

    def __init__(self, log_dir: Path, dataset_root: str, params_file: Path | None = None,
                 teleop_params: dict[str, Any] | None = None, startup_timeout_s: float = 120.0,
                 device: str = "command") -> None:
        self.device = device
        self._teleop_params = {**(teleop_params or {}), "device": device}
        self._demonstrations: list[dict[str, Any]] = []
        self._demo_lock = threading.Lock()
        super().__init__(log_dir, record=True, dataset_root=dataset_root, params_file=params_file,
                         startup_timeout_s=startup_timeout_s)

    def _start_nodes(self, checkpoint_dir: str, device: str, dataset_root: str | None, backend: str) -> None:
        self.procs.start("sim_robot_node", self.params_file)
        # Demonstrations are teleop episodes through and through: no intervention marks.
        self.procs.start("recorder_node", self.params_file, {"dataset_root": str(Path(dataset_root).resolve()),
                                                             "intervention_topic": "''"})
        self.procs.start("scripted_teleop_node", self.params_file, self._teleop_params)
        if self.device != "command":
            self.procs.start("safety_node", self.params_file)
            params = {"device": self.device}
            if self.device == "joy":
                params["joy.joint_speed_rad_s"] = self._teleop_params.get("joy_full_scale_rad_s", 2.0)
            self.procs.start("teleop_node", self.params_file, params)

    def _make_client(self) -> None:
        super()._make_client()
        self._teleop_start = self.node.create_client(Trigger, START_SERVICE)
        self.node.create_subscription(String, RESULT_TOPIC, self._on_demonstration, 10)

    def _wait_ready(self, timeout_s: float) -> None:
        self._wait(lambda: bool(self._task_result) and bool(self._joints), timeout_s, "the simulated arm")
        self._wait(lambda: self._sim_params.service_is_ready(), timeout_s, "sim parameters")
        self._wait(lambda: self._teleop_start.service_is_ready(), timeout_s, "scripted_teleop_node")
        if self.device != "command":
            self._wait(lambda: bool(self._status), timeout_s, "safety_node status")
            engage = self.node.create_client(SetBool, ENGAGE_SERVICE)
            try:
                self._wait(engage.service_is_ready, timeout_s, "teleop_node")
            finally:
                self.node.destroy_client(engage)
        start = self.node.create_client(StartEpisode, RECORDER_START_SERVICE)
        try:
            self._wait(start.service_is_ready, timeout_s, "recorder_node")
        finally:
            self.node.destroy_client(start)

    def _on_demonstration(self, msg: String) -> None:
        with self._demo_lock:
            self._demonstrations.append(json.loads(msg.data))

    def run_demonstration(self, task: str, seed: int, timeout_s: float = 60.0) -> dict[str, Any]:
        """Reset the sim to (task, seed), record one scripted demonstration; its summary dict
        (success, score, details, episode_id, frame_count, path, error; see scripted_teleop_node)."""
        self.reset(task, seed)
        with self._demo_lock:
            before = len(self._demonstrations)
        future = self._teleop_start.call_async(Trigger.Request())
        self._wait(future.done, 10.0, "scripted_teleop_node to accept the demonstration")
        if not future.result().success:
            raise SessionError(f"scripted_teleop_node refused: {future.result().message}")
        self._wait(lambda: len(self._demonstrations) > before, timeout_s, f"the {task} demonstration to finish")
        with self._demo_lock:
            return dict(self._demonstrations[before])
