"""teleop_node: a leader arm or a gamepad/SpaceMouse -> short ActionChunks for safety_node.

Device-agnostic wiring of vla_ros.control.teleop.TeleopController (all the logic lives there). It
never commands the robot itself: each tick while engaged it publishes the target as an ActionChunk
(joint_position, stamped now: the target, then the core's preview of the next chunk_steps - 1
targets) on chunk_topic, so
safety_node's clipping, start-up gate, watchdog and e-stop apply exactly as to the policy's chunks.

  in   joint_states_topic          sensor_msgs/JointState (follower, matched by name)
       leader.topic (device leader) sensor_msgs/JointState of the leader arm, matched by name
       joy.topic (device joy)      sensor_msgs/Joy (deadman, axes, gripper / engage / record buttons)
       engage_topic                std_msgs/Bool: true engages, false disengages
  srv  /vla/teleop/engage          std_srvs/SetBool: the same, with the refusal reason in the answer
  out  chunk_topic                 vla_ros_interfaces/ActionChunk (source of commands while engaged)
       engaged_topic               std_msgs/Bool (latched): policy_node pauses, recorder marks intervention
       status_topic                diagnostic_msgs/DiagnosticArray (2 Hz): state, refused messages by reason
  uses /vla/recorder/start_episode, /vla/recorder/stop_episode (record buttons)
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

from vla_ros.config.teleop import TeleopConfig
from vla_ros.control.teleop import JoyEvent, Refusal, TeleopController
from vla_ros.errors import ObservationError
from vla_ros.ros import convert
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros.types import ActionChunk
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg
from vla_ros_interfaces.srv import StartEpisode, StopEpisode

ENGAGE_SERVICE = "/vla/teleop/engage"
RECORDER_START_SERVICE = "/vla/recorder/start_episode"
RECORDER_STOP_SERVICE = "/vla/recorder/stop_episode"
CHUNK_ID_BASE = 1 << 40  # teleop chunk ids never collide with the policy's counter in a recording


def _cartesian_step(cfg: TeleopConfig):
    """The sim arm's kinematics for Cartesian jog (the only model wired so far)."""
    if cfg.device != "joy":
        return None
    from vla_ros.sim.kinematics import ArmKinematics  # mujoco only when a gamepad may jog in Cartesian space

    return ArmKinematics().jog


class TeleopNode(Node):
    def __init__(self, config: TeleopConfig | None = None, **node_kwargs: Any) -> None:
        super().__init__("teleop_node", **node_kwargs)
        self._lock = threading.Lock()
        self._params = ParamBinding(self, config or TeleopConfig(), on_change=self._on_params_changed)
        cfg = self._params.current
        self._core = TeleopController(cfg, _cartesian_step(cfg))
        self._chunk_count = 0
        self._was_engaged: bool | None = None
        self._success_marked = False
        inputs = ReentrantCallbackGroup()
        self.create_subscription(JointState, cfg.joint_states_topic, self._on_joint_state, qos_profile_sensor_data,
                                 callback_group=inputs)
        if cfg.device == "leader":
            self.create_subscription(JointState, cfg.leader.topic, self._on_leader, qos_profile_sensor_data,
                                     callback_group=inputs)
        else:
            self.create_subscription(Joy, cfg.joy.topic, self._on_joy, qos_profile_sensor_data, callback_group=inputs)
        if cfg.engage_topic:
            self.create_subscription(Bool, cfg.engage_topic, self._on_engage_topic, 10, callback_group=inputs)
        self.create_service(SetBool, ENGAGE_SERVICE, self._on_engage_service, callback_group=inputs)
        self._chunk_pub = self.create_publisher(ActionChunkMsg, cfg.chunk_topic, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._engaged_pub = self.create_publisher(Bool, cfg.engaged_topic, latched)
        self._status_pub = self.create_publisher(DiagnosticArray, cfg.status_topic, 10)
        clients = ReentrantCallbackGroup()
        self._start_client = self.create_client(StartEpisode, RECORDER_START_SERVICE, callback_group=clients)
        self._stop_client = self.create_client(StopEpisode, RECORDER_STOP_SERVICE, callback_group=clients)
        self.create_timer(1.0 / cfg.rate_hz, self._on_tick)
        self.create_timer(0.5, self._publish_status)
        self._publish_engaged(False)
        self.get_logger().info(f"ready: {cfg.device} device, chunks on {cfg.chunk_topic} at {cfg.rate_hz:g} Hz "
                               f"while engaged ({ENGAGE_SERVICE}, {cfg.engage_topic or 'no engage topic'})")

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_params_changed(self, _old: TeleopConfig, new: TeleopConfig) -> None:
        with self._lock:
            self._core.update_config(new)

    # -- inputs --
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            positions = convert.joint_positions(msg, self._params.current.joint_names)
        except ObservationError as err:
            self.get_logger().warning(f"joint state ignored: {err}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self._core.update_joint_state(positions, self._now_ns())

    def _on_leader(self, msg: JointState) -> None:
        with self._lock:
            ok = self._core.offer_leader(list(msg.name), list(msg.position), self._now_ns())
            reason = self._core.status().last_reason
        if not ok:
            self.get_logger().warning(reason, throttle_duration_sec=1.0)

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            before = sum(self._core.status().refused.values())
            events = self._core.offer_joy(list(msg.axes), list(msg.buttons), self._now_ns())
            status = self._core.status()
        if sum(status.refused.values()) > before:
            self.get_logger().warning(status.last_reason, throttle_duration_sec=1.0)
        for event in events:
            self._on_joy_event(event)

    def _engage(self, on: bool) -> tuple[bool, str]:
        with self._lock:
            ok, message = self._core.engage(on, self._now_ns())
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)
        return ok, message

    def _on_engage_topic(self, msg: Bool) -> None:
        self._engage(bool(msg.data))

    def _on_engage_service(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success, response.message = self._engage(bool(request.data))
        return response

    # -- recording from the device's buttons --
    def _on_joy_event(self, event: JoyEvent) -> None:
        cfg = self._params.current
        if event is JoyEvent.MARK_SUCCESS:
            self._success_marked = True
            self.get_logger().info("episode marked successful")
            return
        if event is JoyEvent.RECORD_START:
            self._success_marked = False
            request, client = StartEpisode.Request(task=cfg.record_task, source=cfg.record_source), self._start_client
        else:
            keep = event is JoyEvent.RECORD_STOP
            request = StopEpisode.Request(keep=keep, is_success=keep and self._success_marked,
                                          notes=f"stopped from the {cfg.device} by button")
            client = self._stop_client
        if not client.service_is_ready():
            self.get_logger().error(f"{event.value}: {client.srv_name} is not available (is recorder_node running?)")
            return
        future = client.call_async(request)
        future.add_done_callback(lambda f, e=event: self._log_recorder_answer(e, f))

    def _log_recorder_answer(self, event: JoyEvent, future) -> None:
        response = future.result()
        if response is not None and response.success:
            self.get_logger().info(f"{event.value}: {response.message}")
        else:
            self.get_logger().error(f"{event.value} refused: {response.message if response else 'no answer'}")

    # -- outputs --
    def _publish_engaged(self, engaged: bool) -> None:
        if engaged != self._was_engaged:
            self._was_engaged = engaged
            self._engaged_pub.publish(Bool(data=engaged))

    def _on_tick(self) -> None:
        cfg = self._params.current
        now_ns = self._now_ns()
        with self._lock:
            tick = self._core.tick(now_ns, cfg.chunk_steps - 1)
            engaged = self._core.engaged
        if tick.target is not None:
            if not self._was_engaged:
                self._publish_engaged(True)  # before the first chunk: the policy pauses first
            self._chunk_count += 1
            chunk = ActionChunk(chunk_id=CHUNK_ID_BASE + self._chunk_count, stamp_ns=now_ns,
                                action_space="joint_position", names=cfg.joint_names, dt_s=1.0 / cfg.rate_hz,
                                actions=np.vstack([tick.target, tick.preview]))
            self._chunk_pub.publish(convert.chunk_to_msg(chunk))
        self._publish_engaged(engaged)

    def _publish_status(self) -> None:
        with self._lock:
            status = self._core.status()
        values = {"state": status.state.value, "device": status.device, "engagements": status.engagements,
                  "chunks_sent": self._chunk_count,
                  "refused": sum(n for r, n in status.refused.items() if r is not Refusal.ENGAGE_REFUSED),
                  **{f"refused.{r.value}": status.refused.get(r, 0) for r in Refusal},
                  "last_reason": status.last_reason}
        diag = DiagnosticStatus(level=DiagnosticStatus.OK, name="teleop_node", hardware_id="vla_ros",
                                message=f"{status.state.value} ({status.device})",
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[diag])
        msg.header.stamp = convert.ns_to_stamp(self._now_ns())
        self._status_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    run_node("teleop_node", TeleopNode, lambda: MultiThreadedExecutor(num_threads=3), args)


if __name__ == "__main__":
    main()
