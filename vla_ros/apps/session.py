"""A closed-loop session on the simulated arm: policy_node -> safety_node -> sim_robot_node
(-> recorder_node), each in its own process, driven from a client node in this process.

The demo runs one episode of it and the evaluation many; both read the same EpisodeReport.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from vla_ros.config.files import load_config
from vla_ros.config.policy import PolicyNodeConfig
from vla_ros.config.safety import SafetyConfig
from vla_ros.config.sim import SimConfig
from vla_ros.errors import ObservationError, VlaRosError
from vla_ros.paths import config_file
from vla_ros.apps.processes import NodeProcesses
from vla_ros.ros import convert
from vla_ros.ros.policy_node import POLICY_INFO_TOPIC
from vla_ros.ros.safety_node import STATUS_TOPIC as SAFETY_STATUS_TOPIC
from vla_ros_interfaces.action import RunPolicy
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg

OUTCOMES = {RunPolicy.Result.OUTCOME_COMPLETED: "completed", RunPolicy.Result.OUTCOME_CANCELED: "canceled",
            RunPolicy.Result.OUTCOME_ABORTED: "aborted"}


class SessionError(VlaRosError):
    """The closed loop could not be started or driven (a node died, a service never came)."""


@dataclasses.dataclass
class CapturedFrame:
    """A camera frame seen during an episode (SimSession capture_period_s > 0), for plots."""

    time_s: float  # since the goal was sent
    image: np.ndarray  # (H_img, W_img, 3) uint8 RGB
    joint_positions: dict[str, float]  # the newest joint state when the frame arrived


@dataclasses.dataclass
class EpisodeReport:
    task: str
    seed: int
    instruction: str
    outcome: str
    reason: str
    chunks: int
    inference_s: list[float]
    kept_expert_tokens: int
    commands_sent: int
    clipped_commands: dict[str, int]
    rejected_chunks: int
    dropped_chunks: int
    success: bool
    score: float
    task_details: dict[str, Any]
    episode_id: str
    duration_s: float
    joint_travel_rad: float  # summed |delta q| of the measured arm joints: did the arm move?
    commands: list[np.ndarray] = dataclasses.field(default_factory=list, repr=False)  # as sent to the robot
    frames: list[CapturedFrame] = dataclasses.field(default_factory=list, repr=False)  # capture_period_s > 0
    success_time_s: float | None = None  # since the goal was sent, when the task result first said success
    intervention_count: int = 0  # times teleop took over during the goal
    intervention_s: float = 0.0  # seconds teleop held the arm

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.inference_s) * 1e3, q)) if self.inference_s else float("nan")


class SimSession:
    """Start the nodes, then `reset(task, seed)` and `run_episode(...)` as often as needed."""

    def __init__(self, log_dir: Path, checkpoint_dir: str = "", device: str = "auto", record: bool = False,
                 dataset_root: str | None = None, params_file: Path | None = None,
                 startup_timeout_s: float = 180.0, capture_period_s: float = 0.0, backend: str = "torch") -> None:
        self.params_file = Path(params_file or config_file("sim.yaml"))
        # Topics and joints by name from the params file the nodes run with (one source for both).
        self.policy_config = load_config(self.params_file, "policy_node", PolicyNodeConfig)
        self.safety_config = load_config(self.params_file, "safety_node", SafetyConfig)
        self.sim_config = load_config(self.params_file, "sim_robot_node", SimConfig)
        self._arm_joints = tuple(n for n in self.safety_config.joint_names if n != self.safety_config.gripper.joint_name)
        self.record = record
        env = dict(os.environ)
        env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
        self.procs = NodeProcesses(log_dir, env=env)
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self._executor = SingleThreadedExecutor(context=self._context)
        self._lock = threading.Lock()
        self._commands: list[tuple[int, np.ndarray]] = []  # (receive time ns, positions) of this episode
        self._status: dict[str, str] = {}
        self._task_result: dict[str, Any] = {}
        self._received = {"status": 0, "task_result": 0}  # messages so far, to wait for ones after an event
        self._joints: list[np.ndarray] = []
        self._chunks: list[ActionChunkMsg] = []
        self.capture_period_s = capture_period_s  # > 0: keep a camera frame this often during episodes
        self._frames: list[CapturedFrame] = []
        self._episode_start_s: float | None = None  # monotonic time the running episode's goal was sent
        self._success_time_s: float | None = None  # since the goal was sent, when the task first succeeded
        self._last_joint_state: JointState | None = None
        self.policy_info: dict[str, Any] = {}  # policy_node's latched /vla/policy/info: backend, ready_s, ...
        try:
            self._start_nodes(checkpoint_dir, device, dataset_root, backend)
            self._make_client()
            self._spin_thread = threading.Thread(target=self._spin, daemon=True)
            self._spin_thread.start()
            self._wait_ready(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    # -- set-up --
    def _start_nodes(self, checkpoint_dir: str, device: str, dataset_root: str | None, backend: str) -> None:
        self.procs.start("sim_robot_node", self.params_file)
        self.procs.start("safety_node", self.params_file)
        policy_params: dict[str, Any] = {"device": device, "inference_backend": backend}
        if checkpoint_dir:
            policy_params["checkpoint_dir"] = str(Path(checkpoint_dir).resolve())
        self.procs.start("policy_node", self.params_file, policy_params)
        if self.record:
            self.procs.start("recorder_node", self.params_file,
                             {"dataset_root": str(Path(dataset_root).resolve())} if dataset_root else None)

    def _make_client(self) -> None:
        node = self.node = rclpy.create_node("vla_ros_session", context=self._context)
        self._executor.add_node(node)
        self.action = ActionClient(node, RunPolicy, self.policy_config.action_server_name)
        self._sim_params = node.create_client(SetParameters, "/sim_robot_node/set_parameters")
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(String, self.sim_config.result_topic, self._on_task_result, latched)
        node.create_subscription(String, POLICY_INFO_TOPIC, self._on_policy_info, latched)
        node.create_subscription(DiagnosticArray, SAFETY_STATUS_TOPIC, self._on_status, 10)
        node.create_subscription(JointTrajectory, self.safety_config.output.topic, self._on_command,
                                 qos_profile_sensor_data)
        node.create_subscription(JointState, self.sim_config.joint_state_topic, self._on_joints,
                                 qos_profile_sensor_data)
        node.create_subscription(ActionChunkMsg, self.policy_config.chunk_topic, self._on_chunk, 10)
        if self.capture_period_s > 0:
            node.create_subscription(Image, self.sim_config.camera.topic, self._on_image, qos_profile_sensor_data)

    def _spin(self) -> None:
        try:
            while self._context.ok():  # a bounded wait: never parked in rcl_wait after a shutdown
                self._executor.spin_once(timeout_sec=0.1)
        except (ExternalShutdownException, RuntimeError):
            pass

    def _check_children(self) -> None:
        dead = self.procs.failed()
        if dead:
            node, code = next(iter(dead.items()))
            raise SessionError(f"{node} exited with code {code}; its log ends:\n{self.procs.log_tail(node)}")

    def _wait(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self._check_children()
            if time.monotonic() > deadline:
                raise SessionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.05)

    def _wait_ready(self, timeout_s: float) -> None:
        self._wait(lambda: self.action.server_is_ready(), timeout_s, "the policy's action server")
        self._wait(lambda: bool(self._task_result) and bool(self._joints), timeout_s, "the simulated arm")
        self._wait(lambda: bool(self._status), timeout_s, "safety_node status")
        self._wait(lambda: self._sim_params.service_is_ready(), timeout_s, "sim parameters")
        self._wait(lambda: bool(self.policy_info), timeout_s, "/vla/policy/info")

    # -- subscriptions --
    def _on_task_result(self, msg: String) -> None:
        with self._lock:
            self._received["task_result"] += 1
            self._task_result = json.loads(msg.data)
            if (self._task_result.get("success") and self._episode_start_s is not None
                    and self._success_time_s is None):
                self._success_time_s = time.monotonic() - self._episode_start_s

    def _on_policy_info(self, msg: String) -> None:
        with self._lock:
            self.policy_info = json.loads(msg.data)

    def _on_status(self, msg: DiagnosticArray) -> None:
        if msg.status:
            with self._lock:
                self._status = {kv.key: kv.value for kv in msg.status[0].values}
                self._received["status"] += 1

    def _on_command(self, msg: JointTrajectory) -> None:
        if msg.points:
            with self._lock:
                self._commands.append((time.monotonic_ns(), np.asarray(msg.points[0].positions, dtype=float)))

    def _on_joints(self, msg: JointState) -> None:
        with self._lock:
            try:
                self._joints.append(convert.joint_positions(msg, self._arm_joints))
            except ObservationError:
                return  # a partial or malformed state is not this session's to judge
            self._last_joint_state = msg
            del self._joints[:-2000]

    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        with self._lock:
            self._chunks.append(msg)

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            start_s, joints = self._episode_start_s, self._last_joint_state
            last_s = self._frames[-1].time_s if self._frames else -float("inf")
        now_s = time.monotonic() - start_s if start_s is not None else None
        if now_s is None or joints is None or now_s - last_s < self.capture_period_s:
            return
        frame = CapturedFrame(now_s, convert.image_to_rgb(msg),
                              {n: float(p) for n, p in zip(joints.name, joints.position)})
        with self._lock:
            self._frames.append(frame)

    # -- driving --
    def reset(self, task: str, seed: int, timeout_s: float = 30.0) -> str:
        """Reset the sim to `task` with `seed`; returns the task's instruction."""
        request = SetParameters.Request(parameters=[Parameter("task", value=str(task)).to_parameter_msg(),
                                                    Parameter("seed", value=int(seed)).to_parameter_msg()])
        future = self._sim_params.call_async(request)
        self._wait(future.done, timeout_s, "the sim to accept task and seed")
        refused = [r.reason for r in future.result().results if not r.successful]
        if refused:
            raise SessionError(f"sim refused task {task!r} seed {seed}: {refused}")
        # Same task and seed as before changes no parameter: force the reset through the service.
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, "/sim/reset")
        self._wait(client.service_is_ready, timeout_s, "/sim/reset")
        with self._lock:
            self._task_result = {}
        done = client.call_async(Trigger.Request())
        self._wait(done.done, timeout_s, "the sim reset")
        self.node.destroy_client(client)
        self._wait(lambda: self._task_result.get("seed") == seed and self._task_result.get("task") == task,
                   timeout_s, "the reset task result")
        return str(self._task_result["instruction"])

    def run_episode(self, task: str, seed: int, time_limit_s: float, record: bool | None = None,
                    progress=None) -> EpisodeReport:
        instruction = self.reset(task, seed)
        with self._lock:
            self._commands, self._joints, self._chunks, self._frames = [], [], [], []
            before = dict(self._status)
        goal = RunPolicy.Goal(instruction=instruction, time_limit_s=float(time_limit_s), max_chunks=0,
                              record=self.record if record is None else record)
        feedback: list = []
        started = time.monotonic()
        with self._lock:
            self._episode_start_s, self._success_time_s = started, None
        send = self.action.send_goal_async(goal, feedback_callback=lambda fb: feedback.append(fb.feedback))
        self._wait(send.done, 30.0, "the goal to be accepted")
        handle = send.result()
        if not handle.accepted:
            raise SessionError("the policy node rejected the goal (is another goal running?)")
        result_future = handle.get_result_async()
        while not result_future.done():
            self._check_children()
            if progress is not None:
                progress(time.monotonic() - started, len(feedback))
            time.sleep(0.1)
        result = result_future.result().result
        feedback = [f for f in feedback if f.chunk.horizon > 0]  # not the takeover notices
        duration_s = time.monotonic() - started
        # Feedback is not ordered with the result: one per chunk. Status and task result come at 2 Hz: the
        # second of each after the result was certainly published after it.
        self._wait(lambda: len(feedback) >= result.chunk_count, 10.0, "the goal's feedback")
        with self._lock:
            seen = dict(self._received)
        self._wait(lambda: all(self._received[k] >= seen[k] + 2 for k in seen), 10.0,
                   "a safety status and a task result after the goal")
        with self._lock:
            after, task_result, joints = dict(self._status), dict(self._task_result), list(self._joints)
            commands, frames = list(self._commands), list(self._frames)
            success_time_s, self._episode_start_s = self._success_time_s, None
        clip_keys = [k for k in after if k.startswith("clips.")]
        clipped = {k[len("clips."):]: int(after[k]) - int(before.get(k, 0)) for k in clip_keys}
        travel = float(np.abs(np.diff(np.stack(joints), axis=0)).sum()) if len(joints) > 1 else 0.0
        return EpisodeReport(
            task=task, seed=seed, instruction=instruction, outcome=OUTCOMES.get(result.outcome, "unknown"),
            reason=result.reason, chunks=int(result.chunk_count),
            inference_s=[float(f.inference_time_s) for f in feedback],
            kept_expert_tokens=int(feedback[-1].kept_expert_tokens) if feedback else 0,
            commands_sent=len(commands), clipped_commands=clipped,
            rejected_chunks=int(after.get("rejected_chunks", 0)) - int(before.get("rejected_chunks", 0)),
            dropped_chunks=int(after.get("dropped_chunks", 0)) - int(before.get("dropped_chunks", 0)),
            success=bool(task_result.get("success", False)), score=float(task_result.get("score", 0.0)),
            task_details=task_result.get("details", {}), episode_id=result.episode_id, duration_s=duration_s,
            joint_travel_rad=travel, commands=[c for _, c in commands], frames=frames,
            success_time_s=success_time_s, intervention_count=int(result.intervention_count),
            intervention_s=float(result.intervention_s))

    def close(self) -> None:
        try:
            self._executor.shutdown(timeout_sec=2.0)
        finally:
            self._context.try_shutdown()
            self.procs.stop()

    def __enter__(self) -> "SimSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
