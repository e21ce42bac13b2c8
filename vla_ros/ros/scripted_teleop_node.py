"""scripted_teleop_node: a scripted sim expert (vla_ros.sim.experts) played as a teleop device.

Each demonstration runs exactly as a person's teleoperated one would: the node starts a recorder
episode (source "teleop", task = the sim's instruction), sends joint-position commands on the robot's
command topic at control_rate_hz, and stops the episode (keep, is_success from the sim's task result).
The recorder turns what it sees on the topics into the dataset; nothing is written here.

With device leader or joy the expert plays a teleop device instead, driving teleop_node (and so
safety_node) like a person would: a simulated leader arm (JointState of the expert's targets on
leader_topic) or a simulated gamepad (Joy joint jog: deadman held, axes = the expert's velocity plus
a proportional correction, gripper buttons), engaging teleop on engage_topic for each demonstration.
Teleop and safety_node add latency, so in these modes the expert, like an operator, waits (its plan's
clock stops) while the arm is more than catch_up_rad behind its last target.

  in   state_topic (/sim/state)                  std_msgs/String JSON SimState (sim_robot_node)
       result_topic (/sim/task_result)           std_msgs/String JSON task result (latched)
  out  command_topic                             JointTrajectory (one point, 1/control_rate_hz ahead)
                                                 or Float64MultiArray
       /vla/scripted_teleop/result               std_msgs/String JSON after each demonstration:
                                                 {demonstration, task, seed, instruction, success,
                                                 score, details, timed_out, sim_duration_s,
                                                 episode_id, frame_count, path, error}
  srv  /vla/scripted_teleop/start                std_srvs/Trigger: run one demonstration of the task
                                                 the sim has set up now (reset the sim first)
  uses /vla/recorder/start_episode, /vla/recorder/stop_episode   (when `record` is true)
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any, Callable

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.config.scripted_teleop import ScriptedTeleopConfig
from vla_ros.config.sim import SimConfig
from vla_ros.config.teleop import JoyConfig
from vla_ros.errors import VlaRosError
from vla_ros.ros import convert
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros.sim.arm_sim import SimState
from vla_ros.sim.experts import make_expert
from vla_ros.sim.state_json import state_from_dict
from vla_ros_interfaces.srv import StartEpisode, StopEpisode

START_SERVICE = "/vla/scripted_teleop/start"
RESULT_TOPIC = "/vla/scripted_teleop/result"
RECORDER_START_SERVICE = "/vla/recorder/start_episode"
RECORDER_STOP_SERVICE = "/vla/recorder/stop_episode"


class TeleopError(VlaRosError):
    """A demonstration could not run: no sim state, the recorder refused, a service never answered."""


class ScriptedTeleopNode(Node):
    def __init__(self, config: ScriptedTeleopConfig | None = None, **node_kwargs: Any) -> None:
        self._stop = threading.Event()  # before anything can raise: destroy_node may see a half-built node
        self._thread: threading.Thread | None = None
        super().__init__("scripted_teleop_node", **node_kwargs)
        self._params = ParamBinding(self, config or ScriptedTeleopConfig())
        cfg = self._params.current
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._state_count = 0
        self._task_result: dict[str, Any] = {}
        self._running = False
        self._demonstrations = 0
        inputs = ReentrantCallbackGroup()
        self.create_subscription(String, cfg.state_topic, self._on_state, QoSProfile(depth=1), callback_group=inputs)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, cfg.result_topic, self._on_result, latched, callback_group=inputs)
        msg_type = JointTrajectory if cfg.command_type == "joint_trajectory" else Float64MultiArray
        self._command_pub = self.create_publisher(msg_type, cfg.command_topic, 10)
        self._result_pub = self.create_publisher(String, RESULT_TOPIC, 10)
        self._leader_pub = self.create_publisher(JointState, cfg.leader_topic, 10)
        self._joy_pub = self.create_publisher(Joy, cfg.joy_topic, 10)
        self._engage_pub = self.create_publisher(Bool, cfg.engage_topic, 10)
        clients = ReentrantCallbackGroup()  # answered while the demonstration thread waits
        self._start_client = self.create_client(StartEpisode, RECORDER_START_SERVICE, callback_group=clients)
        self._stop_client = self.create_client(StopEpisode, RECORDER_STOP_SERVICE, callback_group=clients)
        self.create_service(Trigger, START_SERVICE, self._on_start, callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"ready: {START_SERVICE} runs one demonstration at {cfg.control_rate_hz} Hz on "
                               f"{cfg.command_topic}, recording {'on' if cfg.record else 'off'}")

    # -- inputs --
    def _on_state(self, msg: String) -> None:
        try:
            data = json.loads(msg.data)
        except json.JSONDecodeError as err:
            self.get_logger().warning(f"sim state is not JSON: {err}", throttle_duration_sec=1.0)
            return
        with self._lock:
            self._state = data
            self._state_count += 1

    def _on_result(self, msg: String) -> None:
        try:
            data = json.loads(msg.data)
        except json.JSONDecodeError as err:
            self.get_logger().warning(f"task result is not JSON: {err}", throttle_duration_sec=1.0)
            return
        with self._lock:
            self._task_result = data

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._running:
                response.success, response.message = False, "a demonstration is already running"
                return response
            self._running = True
            self._demonstrations += 1
            number, after = self._demonstrations, self._state_count
        self._thread = threading.Thread(target=self._demonstrate, args=(number, after), daemon=True,
                                        name="scripted_teleop")
        self._thread.start()
        response.success, response.message = True, f"demonstration {number} started"
        return response

    # -- one demonstration (own thread) --
    def _wait_for(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self._stop.is_set():
                raise TeleopError(f"shutting down while waiting for {what}")
            if time.monotonic() > deadline:
                raise TeleopError(f"no {what} within {timeout_s:.1f} s")
            time.sleep(0.01)

    def _latest_state(self) -> SimState:
        with self._lock:
            data = self._state
        return state_from_dict(data)

    def _call(self, client, request, what: str):
        timeout_s = self._params.current.service_timeout_s
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TeleopError(f"{what}: service {client.srv_name} not available after {timeout_s:.1f} s")
        future = client.call_async(request)
        self._wait_for(future.done, timeout_s, f"answer from {client.srv_name}")
        response = future.result()
        if response is None or not response.success:
            raise TeleopError(f"{what} refused: {response.message if response is not None else 'no response'}")
        return response

    def _send(self, target: np.ndarray, measured: np.ndarray | None = None,
              velocity: np.ndarray | None = None, pressed: tuple[int, ...] = ()) -> None:
        """The expert's target (command order) as a robot command, a leader state or a gamepad message."""
        cfg = self._params.current
        stamp = convert.ns_to_stamp(self.get_clock().now().nanoseconds)
        if cfg.device == "leader":
            msg = JointState(name=list(cfg.joint_names), position=[float(v) for v in target])
            msg.header.stamp = stamp
            self._leader_pub.publish(msg)
            return
        if cfg.device == "joy":
            self._joy_pub.publish(self._joy_message(target, measured, velocity, pressed, stamp))
            return
        if cfg.command_type == "float64_array":
            self._command_pub.publish(Float64MultiArray(data=[float(v) for v in target]))
            return
        msg = JointTrajectory()
        msg.header.stamp = convert.ns_to_stamp(self.get_clock().now().nanoseconds)
        msg.joint_names = list(cfg.joint_names)
        # Reach the target in one control period, as safety_node's commands do.
        sec, nanosec = divmod(round(1e9 / cfg.control_rate_hz), 1_000_000_000)
        msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in target],
                                               time_from_start=Duration(sec=sec, nanosec=nanosec)))
        self._command_pub.publish(msg)

    def _joy_message(self, target: np.ndarray, measured: np.ndarray | None, velocity: np.ndarray | None,
                     pressed: tuple[int, ...], stamp) -> Joy:
        """Joint jog towards the target: feed-forward velocity plus a proportional pull, deadman held."""
        cfg, joy = self._params.current, JoyConfig()
        arm = [i for i, n in enumerate(cfg.joint_names) if n != "gripper"]
        axes = [0.0] * (max(joy.joint_axes) + 1)
        if measured is not None:
            feed = velocity if velocity is not None else np.zeros_like(target)
            wanted = (feed + cfg.joy_gain_per_s * (target - measured)) / cfg.joy_full_scale_rad_s
            wanted = np.where(np.abs(wanted) > 1e-3, wanted + np.sign(wanted) * joy.deadzone, 0.0)  # past the deadzone
            for joint, axis in zip(arm, joy.joint_axes):
                axes[axis] = float(np.clip(wanted[joint], -1.0, 1.0))
        buttons = [0] * (max(joy.deadman_button, joy.gripper_close_button, joy.gripper_open_button,
                             joy.engage_button, joy.success_button, joy.record_start_button,
                             joy.record_stop_button, joy.record_discard_button) + 1)
        buttons[joy.deadman_button] = 1
        gripper = target[list(cfg.joint_names).index("gripper")]
        buttons[joy.gripper_close_button if gripper > 0.5 else joy.gripper_open_button] = 1
        for button in pressed:
            buttons[button] = 1
        msg = Joy(axes=axes, buttons=buttons)
        msg.header.stamp = stamp
        return msg

    def _engage(self, on: bool, target: np.ndarray, measured: np.ndarray) -> None:
        """Engage or release teleop_node (devices leader and joy) with the device already live."""
        cfg = self._params.current
        for _ in range(3):  # a few device messages first: teleop_node engages only on a live device
            self._send(target, measured, None)
            self._stop.wait(1.0 / cfg.control_rate_hz)
        self._engage_pub.publish(Bool(data=on))

    def _demonstrate(self, number: int, states_before: int) -> None:
        cfg = self._params.current
        summary: dict[str, Any] = {"demonstration": number, "success": False, "score": 0.0, "details": {},
                                   "timed_out": False, "episode_id": "", "frame_count": 0, "path": "", "error": ""}
        recording = False
        try:
            # A state sent after the request: the one the caller's reset produced, not an older one.
            self._wait_for(lambda: self._state_count > states_before, cfg.service_timeout_s, "sim state")
            state = self._latest_state()
            task = state.task
            summary.update(task=task.task, seed=task.seed, instruction=task.instruction)
            with self._lock:
                names, velocities = self._state["joint_names"], self._state["max_velocity_rad_s"]
            sim_config = SimConfig(task=task.task, joint_names=tuple(names), max_velocity_rad_s=tuple(velocities))
            order = [tuple(names).index(n) for n in cfg.joint_names]  # sim order -> command order
            expert = make_expert(sim_config, task.task)
            if cfg.record:
                response = self._call(self._start_client, StartEpisode.Request(task=task.instruction, source="teleop"),
                                      "start episode")
                recording, summary["episode_id"] = True, response.episode_id
            start_s, period_s = state.time_s, 1.0 / cfg.control_rate_hz
            target = np.asarray(state.joint_positions)
            device = cfg.device != "command"
            if device:
                self._engage(True, target[order], target[order])
            next_tick = time.monotonic()
            previous = target
            waited_s = 0.0  # device modes: expert time held back while the arm catches up
            gripper = list(names).index("gripper")
            last_measured: np.ndarray | None = None
            while not self._stop.is_set():
                state = self._latest_state()
                measured = np.asarray(state.joint_positions)
                behind = np.abs(measured - previous)
                if state.grasped_object is not None:  # fingers stop on a held object: only the arm counts
                    behind[gripper] = 0.0
                moving = last_measured is None or np.abs(measured - last_measured).max() > 1e-3
                last_measured = measured  # a stalled arm (a target beyond safety's limits) is not waited for
                if device and moving and behind.max() > cfg.catch_up_rad:
                    waited_s += period_s  # like an operator, wait for the robot before moving on
                state = dataclasses.replace(state, time_s=state.time_s - waited_s)
                if expert.is_done(state):
                    break
                if state.time_s - start_s > cfg.max_duration_s:
                    summary["timed_out"] = True
                    break
                target = expert.act(state)
                measured = np.asarray(state.joint_positions)
                self._send(target[order], measured[order], (target - previous)[order] / period_s)
                previous = target
                next_tick += period_s
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
            settle_until = time.monotonic() + cfg.settle_s
            while time.monotonic() < settle_until and not self._stop.is_set():
                measured = np.asarray(self._latest_state().joint_positions)
                self._send(target[order], measured[order], None)  # the recorder sees the held command too
                self._stop.wait(period_s)
            if device:
                self._engage(False, target[order], np.asarray(self._latest_state().joint_positions)[order])
            end_s = self._latest_state().time_s
            self._wait_for(lambda: self._task_result.get("time_s", -1.0) >= end_s - 1e-6 and
                           self._task_result.get("seed") == task.seed, cfg.service_timeout_s, "task result")
            with self._lock:
                result = dict(self._task_result)
            summary.update(success=bool(result["success"]), score=float(result["score"]),
                           details=result.get("details", {}), sim_duration_s=round(end_s - start_s, 3))
            if recording:
                notes = json.dumps({"expert": task.task, "seed": task.seed, "score": summary["score"],
                                    "timed_out": summary["timed_out"]})
                response = self._call(self._stop_client, StopEpisode.Request(
                    keep=True, is_success=summary["success"], notes=notes), "stop episode")
                recording = False
                summary.update(episode_id=response.episode_id, frame_count=int(response.frame_count),
                               path=response.path)
            self.get_logger().info(f"demonstration {number}: {task.task} seed {task.seed} "
                                   f"success={summary['success']} score={summary['score']:.2f}")
        except (VlaRosError, KeyError, TypeError, ValueError) as err:
            summary["error"] = f"{type(err).__name__}: {err}"
            self.get_logger().error(f"demonstration {number} failed: {summary['error']}")
            if recording:  # a broken demonstration must not end up in the dataset
                summary["episode_id"] = ""
                try:
                    self._call(self._stop_client, StopEpisode.Request(keep=False, is_success=False,
                                                                      notes=summary["error"]), "discard episode")
                except TeleopError as stop_err:
                    self.get_logger().error(f"could not discard the episode: {stop_err}")
        finally:
            self._result_pub.publish(String(data=json.dumps(summary)))
            with self._lock:
                self._running = False

    def begin_shutdown(self) -> Callable[[], bool]:
        """End a running demonstration (it discards its episode through the recorder while the
        executor still spins); returns whether it has ended."""
        self._stop.set()
        return lambda: self._thread is None or not self._thread.is_alive()

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node("scripted_teleop_node", ScriptedTeleopNode, lambda: MultiThreadedExecutor(num_threads=3), args)


if __name__ == "__main__":
    main()
