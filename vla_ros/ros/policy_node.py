"""policy_node: camera + joint states -> policy -> ActionChunk, served through /vla/run_policy.

Goals: one at a time. With new_goal_policy=reject (default) a goal arriving while another runs is
rejected; with preempt the running goal aborts ("preempted by a new goal") and the new one starts.
Each cycle (replan_period_s) builds an observation from the newest messages, runs the policy on
the goal's thread (never on the subscription threads) and publishes the chunk on the topic and
as feedback. The chunk's stamp is the observation's (oldest source) stamp; dt is the policy's.

Takeover: while teleop_engaged_topic says true (teleop_node holds the arm through safety_node), the
goal sends no chunks (feedback intervention_active); once it says false the goal resumes with an
observation stamped after the release, so its first chunk starts from where the arm is now.
The result counts the takeovers (intervention_count) and their duration (intervention_s).
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String

from vla_ros.config.policy import PolicyNodeConfig
from vla_ros.errors import ObservationError, PolicyMismatchError, StaleObservationError
from vla_ros.observation import JOINT_STATE_SOURCE, ObservationGate
from vla_ros.paths import default_checkpoint_dir
from vla_ros.ros import convert
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros.types import ACTION_SPACES, ActionChunk, Policy
from vla_ros_interfaces.action import RunPolicy
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg
from vla_ros_interfaces.srv import StartEpisode, StopEpisode

Result = RunPolicy.Result


def check_policy_matches(policy: Policy, cfg: PolicyNodeConfig) -> None:
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
    if tuple(spec.image_size_px) != (cfg.image_height_px, cfg.image_width_px):
        problems.append(f"image size: policy expects {tuple(spec.image_size_px)} (h, w), config has "
                        f"({cfg.image_height_px}, {cfg.image_width_px})")
    if problems:
        raise PolicyMismatchError("policy does not match the config: " + "; ".join(problems))


def load_policy(cfg: PolicyNodeConfig) -> Policy:
    from vla_ros.model.policy import DeepVisionPolicy  # torch is imported only when a model is needed

    path = cfg.checkpoint_dir or str(default_checkpoint_dir())
    fast = {"auto": None, "on": True, "off": False}[cfg.fast_inference]
    return DeepVisionPolicy.from_checkpoint(path, device=cfg.device, fast_inference=fast)


class _GoalRun:
    """State of the running goal, shared with the goal callback for preemption."""

    def __init__(self, takeovers_before: int) -> None:
        self.preempted = threading.Event()
        self.takeovers_before = takeovers_before  # teleop engagements counted before the goal started
        self.interventions = 0
        self.intervention_s = 0.0
        self.paused_since: float | None = None  # monotonic time teleop took over; None while the policy drives


class PolicyNode(Node):
    def __init__(self, policy: Policy | None = None, config: PolicyNodeConfig | None = None,
                 **node_kwargs: Any) -> None:
        super().__init__("policy_node", **node_kwargs)
        self._params = ParamBinding(self, config or PolicyNodeConfig(), on_change=self._on_params_changed)
        cfg = self._params.current
        self._policy = policy if policy is not None else load_policy(cfg)
        check_policy_matches(self._policy, cfg)
        self._policy.set_keep_ratio(cfg.keep_ratio)
        self._gate = ObservationGate(cfg.camera_topics, cfg.joint_states_topic)
        self._chunk_id = 0
        self._goal_lock = threading.Lock()
        self._active: _GoalRun | None = None
        self._idle = threading.Condition(self._goal_lock)
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
        self._chunk_pub = self.create_publisher(ActionChunkMsg, cfg.chunk_topic, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        if cfg.teleop_engaged_topic:
            self.create_subscription(Bool, cfg.teleop_engaged_topic, self._on_teleop_engaged, latched,
                                     callback_group=sensors)
        self._instruction_pub = self.create_publisher(String, cfg.instruction_topic, latched)
        goals = ReentrantCallbackGroup()
        self._start_client = self.create_client(StartEpisode, "/vla/recorder/start_episode", callback_group=goals)
        self._stop_client = self.create_client(StopEpisode, "/vla/recorder/stop_episode", callback_group=goals)
        self._server = ActionServer(self, RunPolicy, cfg.action_server_name, execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=lambda _: CancelResponse.ACCEPT,
                                    callback_group=goals)
        spec = self._policy.spec
        self.get_logger().info(f"ready: {len(spec.camera_names)} camera(s), {spec.action_dim}-d "
                               f"{spec.action_space} actions, horizon {spec.horizon}, dt {spec.dt_s} s")

    # -- inputs (subscription threads: store only, never decode or infer here) --
    def _on_image(self, topic: str, msg: Image | CompressedImage) -> None:
        self._gate.offer(topic, convert.stamp_to_ns(msg.header.stamp), msg)

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

    def _decode_image(self, topic: str, msg: Image | CompressedImage) -> np.ndarray:
        cfg = self._params.current
        rgb = convert.compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else convert.image_to_rgb(msg)
        want = (cfg.image_height_px, cfg.image_width_px)
        if rgb.shape[:2] != want:
            if not cfg.resize_mismatched_images:
                raise ObservationError(f"camera {topic}: image is {rgb.shape[0]}x{rgb.shape[1]}, expected "
                                       f"{want[0]}x{want[1]} (resize_mismatched_images is false)")
            rgb = cv2.resize(rgb, (want[1], want[0]), interpolation=cv2.INTER_AREA)
        return rgb

    def _on_params_changed(self, old: PolicyNodeConfig, new: PolicyNodeConfig) -> None:
        if new.keep_ratio != old.keep_ratio:
            self._policy.set_keep_ratio(new.keep_ratio)

    # -- goals --
    def _on_goal(self, goal: RunPolicy.Goal) -> GoalResponse:
        if not goal.instruction.strip():
            self.get_logger().warning("goal rejected: empty instruction")
            return GoalResponse.REJECT
        if not (np.isfinite(goal.time_limit_s) and goal.time_limit_s >= 0.0):
            self.get_logger().warning(f"goal rejected: time_limit_s {goal.time_limit_s} must be >= 0")
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
        engaged, takeovers, _ = self._teleop()
        run = _GoalRun(takeovers - int(engaged))  # a takeover already under way counts for this goal
        with self._goal_lock:
            # A preempted goal is still finishing: wait for it so only one goal ever publishes.
            while self._active is not None:
                self._idle.wait(timeout=0.1)
            self._active = run
        try:
            return self._run_goal(goal_handle, run)
        finally:
            with self._goal_lock:
                self._active = None
                self._idle.notify_all()

    def _finish(self, goal_handle, outcome: int, reason: str, chunks: int, episode_id: str,
                run: _GoalRun | None = None) -> RunPolicy.Result:
        result = Result(outcome=outcome, reason=reason, chunk_count=chunks, episode_id=episode_id)
        if run is not None:
            result.intervention_count, result.intervention_s = run.interventions, run.intervention_s
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
        outcome, reason, chunks = self._loop(goal_handle, goal, run)
        if run.paused_since is not None:  # the goal ended during a takeover
            run.intervention_s += time.monotonic() - run.paused_since
        if goal.record:
            try:
                self._stop_episode(f"{['completed', 'canceled', 'aborted'][outcome]}: {reason}")
            except RuntimeError as err:
                reason += f"; recording could not be stopped: {err}"
        return self._finish(goal_handle, outcome, reason, chunks, episode_id, run)

    def _loop(self, goal_handle, goal: RunPolicy.Goal, run: _GoalRun) -> tuple[int, str, int]:
        start = time.monotonic()
        chunks = 0
        waiting_since: float | None = None
        next_cycle = start
        resume_after_ns = 0  # after a takeover, only an observation newer than the release may be used
        while True:
            cfg = self._params.current  # one snapshot per cycle
            if goal_handle.is_cancel_requested:
                return Result.OUTCOME_CANCELED, "canceled", chunks
            if run.preempted.is_set():
                return Result.OUTCOME_ABORTED, "preempted by a new goal", chunks
            if not rclpy.ok(context=self.context):
                return Result.OUTCOME_ABORTED, "node shutting down", chunks
            if goal.time_limit_s > 0 and time.monotonic() - start >= goal.time_limit_s:
                return Result.OUTCOME_COMPLETED, f"time limit {goal.time_limit_s:.1f} s reached", chunks
            if goal.max_chunks > 0 and chunks >= goal.max_chunks:
                return Result.OUTCOME_COMPLETED, f"chunk limit {goal.max_chunks} reached", chunks
            now = time.monotonic()
            engaged, takeovers, released_ns = self._teleop()
            run.interventions = takeovers - run.takeovers_before
            if engaged:
                if run.paused_since is None:
                    run.paused_since = now
                    self.get_logger().info("teleop took over: chunks paused")
                    goal_handle.publish_feedback(RunPolicy.Feedback(intervention_active=True,
                                                                    intervention_count=run.interventions))
                time.sleep(0.01)
                continue
            if run.paused_since is not None:  # handed back: resume from where the arm is now
                run.intervention_s += now - run.paused_since
                run.paused_since, resume_after_ns, next_cycle = None, released_ns, now
                waiting_since = None
                self.get_logger().info("teleop released: resuming from the measured position")
            if now < next_cycle:
                time.sleep(min(next_cycle - now, 0.02))  # short sleeps keep cancel responsive
                continue
            try:
                obs = self._gate.build(self.get_clock().now().nanoseconds, cfg.max_observation_age_s,
                                       goal.instruction, self._decode_image,
                                       lambda m: convert.joint_positions(m, cfg.joint_names))
            except StaleObservationError as err:
                waiting_since = waiting_since or now
                if now - waiting_since > cfg.observation_wait_s:
                    return Result.OUTCOME_ABORTED, f"no fresh observation: {err}", chunks
                next_cycle = now + 0.01
                continue
            except ObservationError as err:
                return Result.OUTCOME_ABORTED, f"bad observation: {err}", chunks
            if obs.stamp_ns <= resume_after_ns:  # seen while teleop still moved the arm
                next_cycle = now + 0.01
                continue
            waiting_since = None
            t0 = time.perf_counter()
            try:
                output = self._policy.predict(obs)
            except Exception as err:  # the goal aborts with the message; the node keeps serving
                self.get_logger().error(f"policy raised:\n{traceback.format_exc()}")
                return Result.OUTCOME_ABORTED, f"policy error: {type(err).__name__}: {err}", chunks
            inference_s = time.perf_counter() - t0
            chunk = self._make_chunk(obs.stamp_ns, output.actions)
            if chunk is None:
                return Result.OUTCOME_ABORTED, "policy error: non-finite or mis-shaped actions", chunks
            engaged, takeovers, _ = self._teleop()
            if engaged or takeovers - run.takeovers_before != run.interventions:
                continue  # teleop took over during the inference: this chunk must not reach the arm
            msg = convert.chunk_to_msg(chunk)
            self._chunk_pub.publish(msg)
            goal_handle.publish_feedback(RunPolicy.Feedback(chunk=msg, inference_time_s=inference_s,
                                                            kept_expert_tokens=int(output.kept_expert_tokens),
                                                            intervention_count=run.interventions))
            chunks += 1
            next_cycle = max(next_cycle + cfg.replan_period_s, time.monotonic())

    def _make_chunk(self, stamp_ns: int, actions: np.ndarray) -> ActionChunk | None:
        spec = self._policy.spec
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (spec.horizon, spec.action_dim) or not np.all(np.isfinite(actions)):
            self.get_logger().error(f"policy returned actions of shape {actions.shape} (expected "
                                    f"{(spec.horizon, spec.action_dim)}) or non-finite values")
            return None
        self._chunk_id += 1
        return ActionChunk(chunk_id=self._chunk_id, stamp_ns=stamp_ns, action_space=spec.action_space,
                           names=tuple(spec.action_names), dt_s=spec.dt_s, actions=actions)

    # -- recording through the recorder's services --
    def _call(self, client, request, what: str):
        timeout = self._params.current.recorder_timeout_s
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {client.srv_name} not available after {timeout:.1f} s")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout) or future.result() is None:
            raise RuntimeError(f"{what}: no answer from {client.srv_name} within {timeout:.1f} s")
        response = future.result()
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
