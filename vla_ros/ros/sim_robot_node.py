"""sim_robot_node: the simulated arm and camera (vla_ros.sim.ArmSim) behind ROS 2 topics.

Publishes
  joint_state_topic (/joint_states)        sensor_msgs/JointState at joint_state_rate_hz
  camera.topic (/camera/image_raw)         sensor_msgs/Image rgb8 at camera.rate_hz
  camera.topic + /compressed               sensor_msgs/CompressedImage (JPEG), when camera.jpeg_quality > 0
  result_topic (/sim/task_result)          std_msgs/String, JSON {task, seed, instruction, time_s,
                                           success, score, details}; latched, 2 Hz and after resets
  state_topic (/sim/state)                 std_msgs/String, JSON of the full SimState (object poses,
                                           held object, tcp pose, task layout, time; see
                                           vla_ros/sim/state_json.py) with every joint state: what a
                                           scripted expert needs to act as a teleop device
Subscribes
  command_topic                            trajectory_msgs/JointTrajectory (command_type
                                           joint_trajectory) or std_msgs/Float64MultiArray
                                           (float64_array, positions in joint_names order)
Services
  /sim/reset                               std_srvs/Trigger: reset with the current task and seed
Parameters: SimConfig (vla_ros/config/sim.py); changing `task` or `seed` resets the sim.

A JointTrajectory must name all 7 joints (any order); it starts when received (header.stamp is
ignored) from the current positions, like joint_trajectory_controller; an empty one holds the
current positions. Bad commands (NaN, out of range, unknown or missing joints) are refused with a
warning and the previous target stays. A background thread advances the simulation with the
wall clock (times physics.real_time_factor, at most 0.1 s per tick so a stall slows the
simulation instead of jumping it) and publishes; all access to the sim holds one lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

import vla_ros.sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from vla_ros.config.sim import SimConfig
from vla_ros.ros import convert
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros.sim.arm_sim import ArmSim, CommandError
from vla_ros.sim.state_json import state_to_dict

MAX_TICK_S = 0.1  # longest simulated step per loop tick
RESULT_PERIOD_S = 0.5
RESET_SERVICE = "/sim/reset"
STATE_TOPIC = "/sim/state"  # fixed name: only the scripted experts read it (the sim's ground truth)


def trajectory_to_points(msg: JointTrajectory, joint_names: tuple[str, ...]) -> list[tuple[float, np.ndarray]]:
    """[(time_from_start_s, positions (J,) in joint_names order)] from a JointTrajectory."""
    names = list(msg.joint_names)
    if sorted(names) != sorted(joint_names):
        raise CommandError(f"trajectory joint_names {names} must name each of {list(joint_names)} once")
    order = [names.index(n) for n in joint_names]
    points = []
    for i, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise CommandError(f"trajectory point {i}: {len(point.positions)} positions for {len(names)} joints")
        t_s = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        points.append((t_s, np.asarray(point.positions, dtype=float)[order]))
    return points


class SimRobotNode(Node):
    def __init__(self, config: SimConfig | None = None, **node_kwargs: Any) -> None:
        self._stop = threading.Event()  # before anything can raise: destroy_node may see a half-built node
        self._thread: threading.Thread | None = None
        super().__init__("sim_robot_node", **node_kwargs)
        self._params = ParamBinding(self, config or SimConfig(), on_change=self._on_params_changed)
        cfg = self._params.current
        self._lock = threading.Lock()
        self._sim = ArmSim(cfg)  # reset to cfg.task / cfg.seed
        sensors = QoSProfile(depth=5)  # reliable: matches reliable and best-effort subscribers
        self._joint_pub = self.create_publisher(JointState, cfg.joint_state_topic, sensors)
        self._image_pub = self.create_publisher(Image, cfg.camera.topic, sensors)
        self._jpeg_pub = (self.create_publisher(CompressedImage, cfg.camera.topic + "/compressed", sensors)
                          if cfg.camera.jpeg_quality > 0 else None)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._result_pub = self.create_publisher(String, cfg.result_topic, latched)
        self._state_pub = self.create_publisher(String, STATE_TOPIC, QoSProfile(depth=1))
        commands = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches any publisher
        if cfg.command_type == "joint_trajectory":
            self.create_subscription(JointTrajectory, cfg.command_topic, self._on_trajectory, commands)
        else:
            self.create_subscription(Float64MultiArray, cfg.command_topic, self._on_array, commands)
        self.create_service(Trigger, RESET_SERVICE, self._on_reset)
        self._publish_result()
        self._thread = threading.Thread(target=self._run, name="sim_robot", daemon=True)
        self._thread.start()
        self.get_logger().info(f"ready: task {cfg.task} seed {cfg.seed}, commands on {cfg.command_topic} "
                               f"({cfg.command_type}), camera {cfg.camera.width_px}x{cfg.camera.height_px} "
                               f"at {cfg.camera.rate_hz} Hz")

    # -- commands (executor threads) --
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = self._params.current.joint_names
        try:
            points = trajectory_to_points(msg, names)
            with self._lock:
                if points:
                    self._sim.set_trajectory(points)
                else:
                    self._sim.set_position_targets(self._sim.joint_positions())
        except CommandError as err:
            self.get_logger().warning(f"command refused: {err}", throttle_duration_sec=1.0)

    def _on_array(self, msg: Float64MultiArray) -> None:
        try:
            with self._lock:
                self._sim.set_position_targets(np.asarray(msg.data, dtype=float))
        except CommandError as err:
            self.get_logger().warning(f"command refused: {err}", throttle_duration_sec=1.0)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        cfg = self._params.current
        self._reset(cfg.task, cfg.seed)
        response.success = True
        response.message = f"reset: task {cfg.task}, seed {cfg.seed}: {self._sim.task.instruction}"
        return response

    def _on_params_changed(self, old: SimConfig, new: SimConfig) -> None:
        if (new.task, new.seed) != (old.task, old.seed):
            self._reset(new.task, new.seed)

    def _reset(self, task: str, seed: int) -> None:
        with self._lock:
            self._sim.reset(seed=seed, task=task)
        self.get_logger().info(f"reset: task {task}, seed {seed}")
        self._publish_result()

    # -- simulation loop (own thread) --
    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # a dead sim thread must be loud, not silent
            if not self.context.ok():
                return  # a signal shut ROS down before destroy_node stopped this thread: normal exit
            logging.getLogger("sim_robot_node").exception("simulation thread stopped")
            raise
        finally:
            with self._lock:
                self._sim.close()  # the OSMesa context is freed by the thread that made it

    def _loop(self) -> None:
        last_s = time.monotonic()
        next_frame_s = next_result_s = last_s
        while not self._stop.is_set():
            cfg = self._params.current
            now_s = time.monotonic()
            with self._lock:
                self._sim.step(max(min(now_s - last_s, MAX_TICK_S), 1e-6) * cfg.physics.real_time_factor)
                positions, velocities = self._sim.joint_positions(), self._sim.joint_velocities()
                state = state_to_dict(self._sim.state(), cfg.joint_names, cfg.max_velocity_rad_s)
                image = self._sim.render() if now_s >= next_frame_s else None
            last_s = now_s
            stamp_ns = self.get_clock().now().nanoseconds
            self._joint_pub.publish(convert.make_joint_state(cfg.joint_names, positions, stamp_ns, velocities))
            self._state_pub.publish(String(data=json.dumps(state)))
            if image is not None:
                self._image_pub.publish(convert.rgb_to_image(image, stamp_ns, cfg.camera.frame_id))
                if self._jpeg_pub is not None:
                    self._jpeg_pub.publish(convert.rgb_to_compressed(image, stamp_ns, cfg.camera.frame_id,
                                                                     cfg.camera.jpeg_quality))
                # keep the rate on average; after a stall start afresh instead of bursting
                next_frame_s = max(next_frame_s + 1.0 / cfg.camera.rate_hz, now_s)
            if now_s >= next_result_s:
                self._publish_result()
                next_result_s = now_s + RESULT_PERIOD_S
            self._stop.wait(max(0.0, now_s + 1.0 / cfg.joint_state_rate_hz - time.monotonic()))

    def _publish_result(self) -> None:
        with self._lock:
            result = self._sim.task_result()
            task = self._sim.task
            time_s = self._sim.time_s
        self._result_pub.publish(String(data=json.dumps({
            "task": task.task, "seed": task.seed, "instruction": task.instruction,
            "time_s": round(time_s, 3), "success": result.success, "score": round(result.score, 4),
            "details": result.details})))

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # one tick: a step and a render
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node("sim_robot_node", SimRobotNode, lambda: MultiThreadedExecutor(num_threads=2), args)


if __name__ == "__main__":
    main()
