"""safety_node: the only node that publishes to the robot.

Every callback converts messages and calls vla_ros.control.safety.SafetyController, which holds
all the logic (blending, limits, start-up gate, watchdog, e-stop); see its module docstring.

  in   chunk_topic          vla_ros_interfaces/ActionChunk
       joint_states_topic   sensor_msgs/JointState (matched by name; a missing or NaN joint holds;
                            judged fresh by receipt time, stamps only sanity-checked)
       estop.topic          std_msgs/Bool: true presses, false releases; the stop stays latched
                            until /vla/safety/reset. Two subscriptions hear every publisher: a
                            reliable transient-local one receives a latched publisher's last message
                            at start-up (pressed before this node started: it comes up latched), a
                            best-effort volatile one matches best-effort publishers (joysticks,
                            teleop) and plain reliable ones; a message heard through both counts once
  srv  /vla/safety/reset    std_srvs/Trigger: clear a latched e-stop (refused while pressed or moving)
       /vla/safety/arm      std_srvs/SetBool: true sends commands to output.topic, false to
                            output.dry_run_topic (arming starts a new run from the measured position)
  out  output.topic / output.dry_run_topic at control_rate_hz: trajectory_msgs/JointTrajectory
                            (positions only, header.stamp = the tick, point i at time_from_start
                            lead + i / control_rate_hz, lead = one period fixed per run, so the
                            points of consecutive commands are as far apart in time as the ticks
                            really were) or std_msgs/Float64MultiArray (positions in joint_names
                            order; applied on receipt, so its timing is the publishing spacing)
       /vla/safety/status   diagnostic_msgs/DiagnosticArray at output.status_rate_hz

JointTrajectory points carry no velocities: joint_trajectory_controller refuses a trajectory that
ends with a non-zero velocity unless allow_nonzero_velocity_at_trajectory_end is set.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.config.safety import SafetyConfig
from vla_ros.control.safety import ChunkRejection, SafetyController, SafetyStatus, TickResult
from vla_ros.control.watchdog import HoldReason, WatchdogState
from vla_ros.errors import ChunkError, ObservationError
from vla_ros.ros import convert
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg

RESET_SERVICE = "/vla/safety/reset"
ARM_SERVICE = "/vla/safety/arm"
# While an e-stop publisher is known but nothing was heard from it yet, the control loop waits up to this long
# after start: a latched (transient-local) publisher's last message arrives just after discovery, and an e-stop
# pressed before start must latch before any command.
ESTOP_DISCOVERY_S = 1.0
STATUS_TOPIC = "/vla/safety/status"
CHUNK_TIMING_TOPIC = "/vla/safety/chunk_timing"  # per chunk: its age (now - stamp) on receipt


def command_to_trajectory(result: TickResult, joint_names: tuple[str, ...], stamp_ns: int) -> JointTrajectory:
    """The command due result.lead_s after stamp_ns (the tick), then its preview one period apart."""
    msg = JointTrajectory()
    msg.header.stamp = convert.ns_to_stamp(stamp_ns)
    msg.joint_names = list(joint_names)
    for i, positions in enumerate([result.command, *result.preview_positions]):
        sec, nanosec = divmod(round((result.lead_s + i * result.period_s) * 1e9), 1_000_000_000)
        msg.points.append(JointTrajectoryPoint(positions=[float(p) for p in positions],
                                               time_from_start=Duration(sec=sec, nanosec=nanosec)))
    return msg


def command_to_array(result: TickResult) -> Float64MultiArray:
    return Float64MultiArray(data=[float(p) for p in result.command])


def status_to_diagnostics(status: SafetyStatus, stamp_ns: int) -> DiagnosticArray:
    """One DiagnosticStatus with stable keys (every rejection reason and joint always listed)."""
    if status.state is WatchdogState.ESTOP:
        level = DiagnosticStatus.ERROR
    elif status.state is WatchdogState.HOLD or status.hold_reason in (
            HoldReason.JOINT_STATE_INVALID, HoldReason.JOINT_STATE_STALE):
        level = DiagnosticStatus.WARN
    else:
        level = DiagnosticStatus.OK
    values = {
        "armed": status.armed, "estop_pressed": status.estop_pressed,
        "estop_latched": status.estop_latched, "state": status.state.value,
        "hold_reason": status.hold_reason.value, "run_id": status.run_id,
        "blend_mode": status.blend_mode, "accepted_chunks": status.accepted_chunks,
        "dropped_chunks": status.dropped_chunks, "refused_joint_states": status.refused_joint_states,
        "rejected_chunks": sum(status.rejected_chunks.values()),
        **{f"rejected.{r.value}": status.rejected_chunks.get(r, 0) for r in ChunkRejection
           if r is not ChunkRejection.TOO_OLD},
        **{f"clips.{name}": count for name, count in zip(status.joint_names, status.clip_counts)},
        "last_reason": status.last_reason,
    }
    mode = "armed" if status.armed else "dry run"
    diag = DiagnosticStatus(level=level, name="safety_node", hardware_id="vla_ros",
                            message=f"{status.state.value} ({status.hold_reason.value}), {mode}",
                            values=[KeyValue(key=k, value=str(v).lower() if isinstance(v, bool) else str(v))
                                    for k, v in values.items()])
    array = DiagnosticArray(status=[diag])
    array.header.stamp = convert.ns_to_stamp(stamp_ns)
    return array


class SafetyNode(Node):
    def __init__(self, config: SafetyConfig | None = None, **node_kwargs: Any) -> None:
        super().__init__("safety_node", **node_kwargs)
        # The core is single-threaded; callbacks and parameter changes take turns through this lock.
        self._lock = threading.Lock()
        self._params = ParamBinding(self, config or SafetyConfig(), on_change=self._on_params_changed)
        cfg = self._params.current
        self._core = SafetyController(cfg)
        self._last_hold = HoldReason.NONE
        msg_type = JointTrajectory if cfg.output.mode == "joint_trajectory" else Float64MultiArray
        self._robot_pub = self.create_publisher(msg_type, cfg.output.topic, 10)
        self._dry_run_pub = self.create_publisher(msg_type, cfg.output.dry_run_topic, 10)
        self._status_pub = self.create_publisher(DiagnosticArray, STATUS_TOPIC, 10)
        self._chunk_timing_pub = self.create_publisher(DiagnosticArray, CHUNK_TIMING_TOPIC, 10)
        self.create_subscription(ActionChunkMsg, cfg.chunk_topic, self._on_chunk, 10)
        self.create_subscription(JointState, cfg.joint_states_topic, self._on_joint_state,
                                 qos_profile_sensor_data)
        self._estop_seen: collections.deque[tuple[int, int | None]] = collections.deque(maxlen=64)
        quiet = SubscriptionEventCallbacks(incompatible_qos=lambda _: None)  # the other one matches
        self.create_subscription(Bool, cfg.estop.topic, self._on_estop, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
            event_callbacks=quiet)
        self.create_subscription(Bool, cfg.estop.topic, self._on_estop, QoSProfile(
            depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE),
            event_callbacks=quiet)
        self.create_service(Trigger, RESET_SERVICE, self._on_reset)
        self.create_service(SetBool, ARM_SERVICE, self._on_arm)
        self._started_s = time.monotonic()
        self._control_timer = self.create_timer(1.0 / cfg.control_rate_hz, self._on_tick)
        self.create_timer(1.0 / cfg.output.status_rate_hz, self._publish_status)
        where = cfg.output.topic if self._core.armed else cfg.output.dry_run_topic
        self.get_logger().info(f"ready: {len(cfg.joint_names)} joints at {cfg.control_rate_hz:g} Hz, "
                               f"{cfg.output.mode} commands to {where} ({'armed' if self._core.armed else 'dry run'})")

    # -- inputs --
    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            try:
                verdict = self._core.add_chunk(convert.msg_to_chunk(msg), now_ns)
            except ChunkError as err:
                verdict = self._core.refuse_malformed_chunk(msg.chunk_id, str(err))
        if not verdict.accepted:
            self.get_logger().warning(verdict.message, throttle_duration_sec=1.0)
        self._publish_chunk_timing(msg, now_ns, verdict.accepted)

    def _publish_chunk_timing(self, msg: ActionChunkMsg, now_ns: int, accepted: bool) -> None:
        age_ms = (now_ns - convert.stamp_to_ns(msg.header.stamp)) * 1e-6
        status = DiagnosticStatus(level=DiagnosticStatus.OK if accepted else DiagnosticStatus.WARN,
                                  name="safety_node chunk timing", hardware_id="vla_ros",
                                  values=[KeyValue(key="chunk_id", value=str(msg.chunk_id)),
                                          KeyValue(key="age_at_receipt_ms", value=f"{age_ms:.3f}"),
                                          KeyValue(key="accepted", value=str(accepted).lower())])
        array = DiagnosticArray(status=[status])
        array.header.stamp = convert.ns_to_stamp(now_ns)
        self._chunk_timing_pub.publish(array)

    def _on_joint_state(self, msg: JointState) -> None:
        received_ns = self.get_clock().now().nanoseconds
        stamp_ns = convert.stamp_to_ns(msg.header.stamp)
        names = self._params.current.joint_names
        with self._lock:
            try:
                self._core.update_joint_state(convert.joint_positions(msg, names), stamp_ns,
                                              received_ns=received_ns)
            except ObservationError as err:
                self._core.refuse_joint_state(stamp_ns, str(err), received_ns=received_ns)

    def _on_estop(self, msg: Bool, info: dict) -> None:
        # A reliable publisher reaches both subscriptions with the same sample (same source stamp and number).
        key = (info["source_timestamp"], info.get("publication_sequence_number"))
        with self._lock:
            if key in self._estop_seen:
                return
            self._estop_seen.append(key)
            self._core.estop(bool(msg.data))
        if msg.data:
            self.get_logger().error("e-stop pressed: holding until released and reset")

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            response.success, response.message = self._core.reset()
        self.get_logger().info(f"reset: {response.message}")
        return response

    def _on_arm(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        cfg = self._params.current
        with self._lock:
            self._core.arm(bool(request.data))
        response.success = True
        response.message = (f"armed: commands go to {cfg.output.topic}" if request.data
                            else f"disarmed: the arm decelerates to rest, then commands go to "
                                 f"{cfg.output.dry_run_topic}")
        self.get_logger().info(response.message)
        return response

    def _on_params_changed(self, old: SafetyConfig, new: SafetyConfig) -> None:
        with self._lock:
            self._core.update_config(new)
        if new.control_rate_hz != old.control_rate_hz:
            self._control_timer.timer_period_ns = round(1e9 / new.control_rate_hz)

    # -- outputs --
    def _on_tick(self) -> None:
        cfg = self._params.current
        now_ns = self.get_clock().now().nanoseconds
        if (not self._estop_seen and time.monotonic() - self._started_s < ESTOP_DISCOVERY_S
                and self.count_publishers(cfg.estop.topic) > 0):
            return  # an e-stop publisher is there but unheard: its latched message may still be on its way
        with self._lock:
            result = self._core.tick(now_ns)
            last_reason = self._core.status().last_reason if result.hold_reason is not self._last_hold else ""
        if result.command is not None:
            msg = (command_to_trajectory(result, cfg.joint_names, now_ns)
                   if cfg.output.mode == "joint_trajectory" else command_to_array(result))
            (self._robot_pub if result.to_robot else self._dry_run_pub).publish(msg)
        if result.hold_reason is not self._last_hold:
            self._last_hold = result.hold_reason
            # rclpy ties a call site to one severity, hence two calls.
            if result.state is WatchdogState.HOLD:
                self.get_logger().warning(f"hold ({result.hold_reason.value}): {last_reason}")
            else:
                self.get_logger().info(f"{result.state.value} ({result.hold_reason.value})")

    def _publish_status(self) -> None:
        with self._lock:
            status = self._core.status()
        self._status_pub.publish(status_to_diagnostics(status, self.get_clock().now().nanoseconds))


def main(args: list[str] | None = None) -> None:
    run_node("safety_node", SafetyNode, SingleThreadedExecutor, args)  # every callback is short; one thread has the least overhead


if __name__ == "__main__":
    main()
