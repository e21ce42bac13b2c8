"""policy_node: camera + joint states -> policy -> ActionChunk, served through /vla/run_policy.

An adapter over the rollout core (vla_ros/control/rollout.py), which decides each cycle whether to
stop, wait or infer; this node answers it from its subscriptions, action server and parameters.
Goals: one at a time. With new_goal_policy=reject (default) a goal arriving while another runs is
rejected; with preempt the running goal aborts ("preempted by a new goal") and the new one starts.
Each cycle (replan_period_s) builds an observation from the newest messages, runs the policy on
the goal's thread (never on the subscription threads) and publishes the chunk on the topic and
as feedback. The chunk's stamp is the observation's (oldest source) stamp; dt is the policy's.

While safety_node reports the e-stop latched on /vla/safety/status, new goals are rejected and a
running goal aborts, both with the reason (a dry run, i.e. disarmed, is not an error).

Each chunk's latency budget (image transport and wait, decode, preprocess, inference, publish; ms)
goes out on /vla/policy/chunk_timing as diagnostic_msgs/DiagnosticArray (docs/two_hosts.md).

Takeover: while teleop_engaged_topic says true (teleop_node holds the arm through safety_node), the
goal sends no chunks (feedback intervention_active); once it says false the goal resumes with an
observation stamped after the release, so its first chunk starts from where the arm is now.
The result counts the takeovers (intervention_count) and their duration (intervention_s).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String

from vla_ros.config.policy import PolicyNodeConfig
from vla_ros.control.rollout import (ChunkTiming, CycleSettings, GoalLimits, Outcome, Rollout, RolloutEnd,
                                     TeleopState)
from vla_ros.errors import CheckpointError, ConfigError, ObservationError, PolicyMismatchError
from vla_ros.observation import JOINT_STATE_SOURCE, ObservationGate, resize_frame
from vla_ros.paths import default_checkpoint_dir
from vla_ros.ros import convert
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros.ros.safety_node import STATUS_TOPIC as SAFETY_STATUS_TOPIC
from vla_ros.types import ACTION_SPACES, ActionChunk, Observation, Policy, PolicyOutput, PolicySpec
from vla_ros_interfaces.action import RunPolicy
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg
from vla_ros_interfaces.srv import StartEpisode, StopEpisode

Result = RunPolicy.Result
RESULT_SEND_GRACE_S = 0.3
CHECKPOINT_CONFIG = "config.json"  # vla_ros.model.checkpoint.CONFIG_FILE (that module imports torch)
POLICY_INFO_TOPIC = "/vla/policy/info"  # std_msgs/String JSON, latched: backend, provider, ready_s, ...
TIMING_TOPIC = "/vla/policy/chunk_timing"


def chunk_timing_msg(chunk_id: int, stamp_ns: int, timing_ms: dict[str, float]) -> DiagnosticArray:
    """One chunk's latency budget (ms) as diagnostics; header.stamp is the chunk's (observation) stamp."""
    values = [KeyValue(key="chunk_id", value=str(chunk_id))]
    values += [KeyValue(key=k, value=f"{v:.3f}") for k, v in timing_ms.items()]
    array = DiagnosticArray(status=[DiagnosticStatus(level=DiagnosticStatus.OK, name="policy_node chunk timing",
                                                     hardware_id="vla_ros", values=values)])
    array.header.stamp = convert.ns_to_stamp(stamp_ns)
    return array


def check_policy_matches(policy: Policy | CheckpointContract, cfg: PolicyNodeConfig) -> None:
    """Raise PolicyMismatchError naming every difference between the policy and the config."""
    spec = policy.spec
    problems = []
    if tuple(spec.joint_names) != tuple(cfg.joint_names):
        problems.append(f"joint names/order: policy {list(spec.joint_names)} vs config {list(cfg.joint_names)}")
    if spec.action_space not in ACTION_SPACES:
        problems.append(f"action space {spec.action_space!r} is not one of {list(ACTION_SPACES)}")
    elif spec.action_dim != len(cfg.joint_names):
        problems.append(f"action dimension: policy {spec.action_dim} vs {len(cfg.joint_names)} configured joints")
    if len(spec.camera_names) != len(cfg.camera_topics):
        problems.append(f"image count: policy expects {len(spec.camera_names)} camera(s) {list(spec.camera_names)}, "
                        f"config has {len(cfg.camera_topics)} {list(cfg.camera_topics)}")
    if spec.robot_type != cfg.robot_type:
        problems.append(f"robot_type: policy trained on {spec.robot_type!r}, config drives {cfg.robot_type!r}"
                        + ("" if cfg.checkpoint_dir else " (checkpoint_dir is empty, which means the shipped "
                           "simulation checkpoint: set checkpoint_dir to a checkpoint trained on this robot)"))
    if tuple(spec.image_size_px) != (cfg.image_height_px, cfg.image_width_px):
        problems.append(f"image size: policy expects {tuple(spec.image_size_px)} (h, w), config has "
                        f"({cfg.image_height_px}, {cfg.image_width_px})")
    if problems:
        raise PolicyMismatchError("policy does not match the config: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class CheckpointContract:
    """What a checkpoint's config.json promises, read without torch or weights (check_policy_matches
    takes it like a Policy: a mismatch is refused before seconds of loading)."""

    spec: PolicySpec


def read_contract(path: str | Path) -> CheckpointContract:
    from vla_ros.model.configuration import DeepVisionConfig  # torch-free

    config_path = Path(path) / CHECKPOINT_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} not found: {path} is not a vla_ros checkpoint directory")
    try:
        robot = DeepVisionConfig.load_json(config_path).robot
    except (json.JSONDecodeError, ConfigError, TypeError) as err:
        raise CheckpointError(f"{config_path} is not a valid DeepVisionConfig: {err}") from err
    return CheckpointContract(robot.policy_spec())


def load_policy(cfg: PolicyNodeConfig) -> Policy:
    path = cfg.checkpoint_dir or str(default_checkpoint_dir())
    check_policy_matches(read_contract(path), cfg)  # before torch and the weights
    from vla_ros.model.policy import build_policy  # torch is imported only when a model is needed

    fast = {"auto": None, "on": True, "off": False}[cfg.fast_inference]
    return build_policy(path, device=cfg.device, backend=cfg.inference_backend, fast_inference=fast,
                        keep_ratio=cfg.keep_ratio or None)


class _GoalRun:
    """State of the running goal, shared with the goal callback for preemption."""

    def __init__(self) -> None:
        self.preempted = threading.Event()


class _GoalHost:
    """Answers the rollout core's questions (control/rollout.py) for one goal from the node's state."""

    def __init__(self, node: "PolicyNode", goal_handle, run: _GoalRun) -> None:
        self.node, self.goal_handle, self.run = node, goal_handle, run
        self.goal = goal_handle.request
        self.cfg = node._params.current
        self.build_ns = 0

    def settings(self) -> CycleSettings:
        self.cfg = self.node._params.current  # one snapshot per cycle
        return CycleSettings(self.cfg.replan_period_s, self.cfg.observation_wait_s)

    def stop_reason(self) -> tuple[Outcome, str] | None:
        node = self.node
        if self.goal_handle.is_cancel_requested:
            return Outcome.CANCELED, "canceled"
        if self.run.preempted.is_set():
            return Outcome.ABORTED, "preempted by a new goal"
        if node._estop_reason:
            return Outcome.ABORTED, node._estop_reason
        if node._shutting_down.is_set() or not rclpy.ok(context=node.context):
            return Outcome.ABORTED, "node shutting down"
        return None

    def teleop(self) -> TeleopState:
        return TeleopState(*self.node._teleop())

    def observe(self) -> Observation:
        node, cfg = self.node, self.cfg
        self.build_ns = node.get_clock().now().nanoseconds
        with node._receipt_lock:
            node._image_receipts = []
        return node._gate.build(self.build_ns, cfg.max_observation_age_s, self.goal.instruction, node._decode_image,
                                lambda m: convert.joint_positions(m, cfg.joint_names))

    def predict(self, obs: Observation) -> PolicyOutput:
        return self.node._policy.predict(obs)

    def publish(self, chunk: ActionChunk, output: PolicyOutput, timing: ChunkTiming, interventions: int) -> None:
        node = self.node
        t_publish = time.perf_counter()
        msg = convert.chunk_to_msg(chunk)
        node._chunk_pub.publish(msg)
        publish_s = time.perf_counter() - t_publish
        self.goal_handle.publish_feedback(RunPolicy.Feedback(
            chunk=msg, inference_time_s=timing.inference_s, kept_expert_tokens=int(output.kept_expert_tokens),
            intervention_count=interventions))
        preprocess_s = float(output.info.get("preprocess_s", 0.0))  # policies that do not split report 0
        with node._receipt_lock:
            stamp_ns, received_ns = min(node._image_receipts) if node._image_receipts else (self.build_ns,) * 2
        node._timing_pub.publish(chunk_timing_msg(chunk.chunk_id, chunk.stamp_ns, {
            "observation_age_ms": (self.build_ns - chunk.stamp_ns) * 1e-6,  # oldest source: an image in practice
            "image_transport_ms": (received_ns - stamp_ns) * 1e-6,  # oldest image: stamp -> callback
            "image_wait_ms": (self.build_ns - received_ns) * 1e-6,  # callback -> taken by this cycle
            "decode_ms": timing.observe_s * 1e3, "preprocess_ms": preprocess_s * 1e3,
            "inference_ms": (timing.inference_s - preprocess_s) * 1e3, "publish_ms": publish_s * 1e3}))

    def on_takeover(self, engaged: bool, interventions: int) -> None:
        if engaged:
            self.node.get_logger().info("teleop took over: chunks paused")
            self.goal_handle.publish_feedback(RunPolicy.Feedback(intervention_active=True,
                                                                 intervention_count=interventions))
        else:
            self.node.get_logger().info("teleop released: resuming from the measured position")

    def log_error(self, text: str) -> None:
        self.node.get_logger().error(text)


class PolicyNode(Node):
    def __init__(self, policy: Policy | None = None, config: PolicyNodeConfig | None = None,
                 **node_kwargs: Any) -> None:
        self._shutting_down = threading.Event()  # before anything can raise: destroy_node may see a half-built node
        self._goal_lock = threading.Lock()
        self._active: _GoalRun | None = None
        self._goal_ended_s = 0.0  # monotonic time the last goal's execute callback returned
        super().__init__("policy_node", **node_kwargs)
        self._params = ParamBinding(self, config or PolicyNodeConfig(), on_change=self._on_params_changed)
        cfg = self._params.current
        started = time.monotonic()
        self._policy = policy if policy is not None else load_policy(cfg)
        check_policy_matches(self._policy, cfg)
        # keep_ratio 0 serves the ratio the checkpoint was trained with (a model trained on every patch must not
        # be served half of them); None for policies without one.
        self._trained_keep_ratio: float | None = getattr(self._policy, "trained_keep_ratio", None)
        self._apply_keep_ratio(cfg.keep_ratio)
        self._gate = ObservationGate(cfg.camera_topics, cfg.joint_states_topic)
        self._rollout = Rollout(self._policy.spec)  # the goal loop's decisions; chunk ids count across goals
        self._receipt_lock = threading.Lock()
        self._image_receipts: list[tuple[int, int]] = []  # (stamp, receipt) of the images of the cycle's observation
        self._idle = threading.Condition(self._goal_lock)
        self._estop_reason = ""  # non-empty while safety_node reports the e-stop latched
        self._teleop_lock = threading.Lock()
        self._teleop_engaged = False
        self._teleop_takeovers = 0  # rising edges of the engaged topic since start-up
        self._teleop_released_ns = 0  # clock time the last release arrived

        sensors = MutuallyExclusiveCallbackGroup()
        for topic in cfg.camera_topics:
            msg_type = CompressedImage if topic.endswith("/compressed") else Image
            self.create_subscription(msg_type, topic, lambda m, t=topic: self._on_image(t, m),
                                     qos_profile_sensor_data, callback_group=sensors)
        self.create_subscription(JointState, cfg.joint_states_topic, self._on_joint_state,
                                 qos_profile_sensor_data, callback_group=sensors)
        self.create_subscription(DiagnosticArray, SAFETY_STATUS_TOPIC, self._on_safety_status, 10,
                                 callback_group=sensors)
        self._chunk_pub = self.create_publisher(ActionChunkMsg, cfg.chunk_topic, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        if cfg.teleop_engaged_topic:
            self.create_subscription(Bool, cfg.teleop_engaged_topic, self._on_teleop_engaged, latched,
                                     callback_group=sensors)
        self._instruction_pub = self.create_publisher(String, cfg.instruction_topic, latched)
        self._timing_pub = self.create_publisher(DiagnosticArray, TIMING_TOPIC, 10)
        goals = ReentrantCallbackGroup()
        self._start_client = self.create_client(StartEpisode, "/vla/recorder/start_episode", callback_group=goals)
        self._stop_client = self.create_client(StopEpisode, "/vla/recorder/stop_episode", callback_group=goals)
        self._server = ActionServer(self, RunPolicy, cfg.action_server_name, execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                    callback_group=goals)
        spec = self._policy.spec
        # What serves the model and how long start-up took, latched for the demo summary and for monitoring.
        info = {**getattr(self._policy, "describe", dict)(), "inference_backend": cfg.inference_backend,
                "ready_s": round(time.time() - psutil.Process().create_time(), 2),
                "policy_load_s": round(time.monotonic() - started, 2)}
        self._info_pub = self.create_publisher(String, POLICY_INFO_TOPIC, latched)
        self._info_pub.publish(String(data=json.dumps(info)))
        self.get_logger().info(f"ready: {len(spec.camera_names)} camera(s), {spec.action_dim}-d "
                               f"{spec.action_space} actions, horizon {spec.horizon}, dt {spec.dt_s} s; {info}")

    # -- inputs (subscription threads: store only, never decode or infer here) --
    def _on_image(self, topic: str, msg: Image | CompressedImage) -> None:
        # The receipt time travels with the message for the latency budget (stamp -> here -> used).
        self._gate.offer(topic, convert.stamp_to_ns(msg.header.stamp), (msg, self.get_clock().now().nanoseconds))

    def _on_joint_state(self, msg: JointState) -> None:
        self._gate.offer(JOINT_STATE_SOURCE, convert.stamp_to_ns(msg.header.stamp), msg)

    def _on_teleop_engaged(self, msg: Bool) -> None:
        with self._teleop_lock:
            if msg.data and not self._teleop_engaged:
                self._teleop_takeovers += 1
            elif not msg.data and self._teleop_engaged:
                self._teleop_released_ns = self.get_clock().now().nanoseconds
            self._teleop_engaged = bool(msg.data)

    def _teleop(self) -> tuple[bool, int, int]:
        """(engaged now, takeovers since start-up, clock ns of the last release)."""
        with self._teleop_lock:
            return self._teleop_engaged, self._teleop_takeovers, self._teleop_released_ns


    def _on_safety_status(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "safety_node":
                values = {kv.key: kv.value for kv in status.values}
                self._estop_reason = ("" if values.get("estop_latched") != "true" else
                                      "safety_node reports the e-stop latched (release it, then call "
                                      f"/vla/safety/reset): {values.get('last_reason', '')}")

    def _decode_image(self, topic: str, held: tuple[Image | CompressedImage, int]) -> np.ndarray:
        msg, received_ns = held
        with self._receipt_lock:
            self._image_receipts.append((convert.stamp_to_ns(msg.header.stamp), received_ns))
        cfg = self._params.current
        rgb = convert.compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else convert.image_to_rgb(msg)
        want = (cfg.image_height_px, cfg.image_width_px)
        if rgb.shape[:2] != want:
            if not cfg.resize_mismatched_images:
                raise ObservationError(f"camera {topic}: image is {rgb.shape[0]}x{rgb.shape[1]}, expected "
                                       f"{want[0]}x{want[1]} (resize_mismatched_images is false)")
            rgb = resize_frame(rgb, *want)
        return rgb

    def _on_params_changed(self, old: PolicyNodeConfig, new: PolicyNodeConfig) -> None:
        if new.keep_ratio != old.keep_ratio:
            self._apply_keep_ratio(new.keep_ratio)

    def _apply_keep_ratio(self, keep_ratio: float) -> None:
        ratio = keep_ratio or self._trained_keep_ratio
        if ratio is not None:
            self._policy.set_keep_ratio(ratio)

    # -- goals --
    def begin_shutdown(self) -> Callable[[], bool]:
        """Stop taking goals and end the running one (ABORTED "node shutting down"); returns whether
        it has ended, its result sent (the runner keeps the executor spinning meanwhile)."""
        self._shutting_down.set()
        # rclpy sends the result from a task it schedules after the execute callback returns: give
        # that task a moment of the still-spinning executor before calling the goal done.
        return lambda: self._active is None and time.monotonic() - self._goal_ended_s >= RESULT_SEND_GRACE_S

    def destroy_node(self) -> None:
        self.begin_shutdown()
        deadline = time.monotonic() + 1.0  # a goal still publishing would find its publisher destroyed
        while self._active is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        super().destroy_node()

    def _on_goal(self, goal: RunPolicy.Goal) -> GoalResponse:
        if self._shutting_down.is_set():
            self.get_logger().warning("goal rejected: the node is shutting down")
            return GoalResponse.REJECT
        if not goal.instruction.strip():
            self.get_logger().warning("goal rejected: empty instruction")
            return GoalResponse.REJECT
        if not (np.isfinite(goal.time_limit_s) and goal.time_limit_s >= 0.0):
            self.get_logger().warning(f"goal rejected: time_limit_s {goal.time_limit_s} must be >= 0")
            return GoalResponse.REJECT
        if self._estop_reason:
            self.get_logger().warning(f"goal rejected: {self._estop_reason}")
            return GoalResponse.REJECT
        with self._goal_lock:
            if self._active is None:
                return GoalResponse.ACCEPT
            if self._params.current.new_goal_policy == "reject":
                self.get_logger().warning("goal rejected: another goal is running (new_goal_policy=reject)")
                return GoalResponse.REJECT
            self._active.preempted.set()
            return GoalResponse.ACCEPT

    def _execute(self, goal_handle) -> RunPolicy.Result:
        run = _GoalRun()
        with self._goal_lock:
            # A preempted goal is still finishing: wait for it so only one goal ever publishes.
            while self._active is not None and not self._shutting_down.is_set():
                self._idle.wait(timeout=0.1)
            if self._active is not None:
                return self._finish(goal_handle, Result.OUTCOME_ABORTED, "node shutting down", 0, "")
            self._active = run
        try:
            return self._run_goal(goal_handle, run)
        finally:
            with self._goal_lock:
                self._active = None
                self._goal_ended_s = time.monotonic()
                self._idle.notify_all()

    def _finish(self, goal_handle, outcome: int, reason: str, chunks: int, episode_id: str,
                end: RolloutEnd | None = None) -> RunPolicy.Result:
        result = Result(outcome=outcome, reason=reason, chunk_count=chunks, episode_id=episode_id)
        if end is not None:
            result.intervention_count, result.intervention_s = end.interventions, end.intervention_s
        if outcome == Result.OUTCOME_COMPLETED:
            goal_handle.succeed()
        elif outcome == Result.OUTCOME_CANCELED:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        text = f"goal ended after {chunks} chunk(s): {reason}"
        # rclpy ties a call site to one severity, hence two calls.
        if outcome == Result.OUTCOME_ABORTED:
            self.get_logger().error(text)
        else:
            self.get_logger().info(text)
        return result

    def _run_goal(self, goal_handle, run: _GoalRun) -> RunPolicy.Result:
        goal = goal_handle.request
        self._instruction_pub.publish(String(data=goal.instruction))
        episode_id = ""
        if goal.record:
            try:
                episode_id = self._start_episode(goal.instruction)
            except RuntimeError as err:
                return self._finish(goal_handle, Result.OUTCOME_ABORTED, f"recording: {err}", 0, "")
        end = self._rollout.run(GoalLimits(goal.time_limit_s, goal.max_chunks), _GoalHost(self, goal_handle, run))
        outcome, reason = int(end.outcome), end.reason
        if goal.record and self._shutting_down.is_set():
            reason += "; the recorder finalises the episode when it stops"
        elif goal.record:
            try:
                self._stop_episode(f"{end.outcome.name.lower()}: {reason}")
            except RuntimeError as err:  # refused (e.g. discarded: no frame) or no answer: no episode to name
                reason += f"; recording could not be stopped: {err}"
                episode_id = ""
        return self._finish(goal_handle, outcome, reason, end.chunks, episode_id, end)

    # -- recording through the recorder's services --
    def _call(self, client, request, what: str):
        timeout = self._params.current.recorder_timeout_s
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {client.srv_name} not available after {timeout:.1f} s")
        try:
            response = client.call(request, timeout_sec=timeout)
        except TimeoutError:
            raise RuntimeError(f"{what}: no answer from {client.srv_name} within {timeout:.1f} s") from None
        if not response.success:
            raise RuntimeError(f"{what} refused: {response.message}")
        return response

    def _start_episode(self, instruction: str) -> str:
        return self._call(self._start_client, StartEpisode.Request(task=instruction, source="policy"),
                          "start episode").episode_id

    def _stop_episode(self, notes: str) -> None:
        self._call(self._stop_client, StopEpisode.Request(keep=True, is_success=False, notes=notes), "stop episode")


def main(args: list[str] | None = None) -> None:
    run_node("policy_node", PolicyNode, lambda: MultiThreadedExecutor(num_threads=4), args)


if __name__ == "__main__":
    main()
