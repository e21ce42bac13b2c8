"""recorder_node: cameras, joint states, commands and chunks -> episodes (LeRobot v3, optional MCAP).

  in   camera_topics               sensor_msgs/Image or CompressedImage (observation.images.<key>)
       joint_states_topic          sensor_msgs/JointState, matched by name (observation.state)
       command_topic               trajectory_msgs/JointTrajectory (first point) or std_msgs/Float64MultiArray
                                   (action); a command without stamp is stamped when received
       chunk_topic                 vla_ros_interfaces/ActionChunk (chunk.id, chunk.step per frame)
       instruction_topic           std_msgs/String: task of an episode started without one
       toggle_topic                std_msgs/Bool pedal: true starts an episode, false stops and keeps it
       intervention_topic          std_msgs/Bool: frames tagged intervention while true
  srv  /vla/recorder/start_episode, /vla/recorder/stop_episode   vla_ros_interfaces/srv/*
  out  status_topic                diagnostic_msgs/DiagnosticArray every status_period_s

All alignment, encoding and crash safety live in vla_ros.recording.DatasetWriter; callbacks only
convert messages. A message the node cannot convert is counted in the episode's report.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from vla_ros.config.recorder import RecorderConfig
from vla_ros.errors import ChunkError, ObservationError, RecordingError
from vla_ros.recording import DatasetWriter, EpisodeSummary, spec_from_config
from vla_ros.ros import convert
from vla_ros.ros.executor import MultiThreadedExecutor
from vla_ros.ros.params import ParamBinding
from vla_ros.ros.runner import run_node
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg
from vla_ros_interfaces.srv import StartEpisode, StopEpisode

START_SERVICE = "/vla/recorder/start_episode"
STOP_SERVICE = "/vla/recorder/stop_episode"


def type_name(msg_type: type) -> str:
    """'sensor_msgs/msg/Image' for sensor_msgs.msg.Image (the MCAP schema name)."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


class RecorderNode(Node):
    def __init__(self, config: RecorderConfig | None = None, **node_kwargs: Any) -> None:
        self._writer: DatasetWriter | None = None  # before anything can raise: destroy_node may see a half-built node
        self._closing: threading.Thread | None = None
        super().__init__("recorder_node", **node_kwargs)
        self._params = ParamBinding(self, config or RecorderConfig())
        cfg = self._params.current
        self._writer = DatasetWriter(cfg.dataset_root, spec_from_config(cfg), cfg)
        for report in self._writer.recovery_reports:
            text = f"{report.outcome} {report.staging_dir}: {report.detail}"
            if report.outcome == "quarantined":
                self.get_logger().error(f"{text} -> {report.quarantine_dir}")
            else:
                self.get_logger().warning(text)
        self._instruction = ""
        self._mcap_topics = set(cfg.mcap_topics or cfg.subscribed_topics) if cfg.record_mcap else set()
        sensors = ReentrantCallbackGroup()  # the writer is thread-safe: let callbacks run side by side
        control = MutuallyExclusiveCallbackGroup()  # start/stop/toggle/status one at a time

        for topic, key in zip(cfg.camera_topics, cfg.camera_keys):
            compressed = topic.endswith("/compressed")
            self._subscribe(CompressedImage if compressed else Image, topic,
                            lambda m, t=topic, k=key: self._on_image(t, k, m), qos_profile_sensor_data, sensors)
        self._subscribe(JointState, cfg.joint_states_topic, self._on_joint_state, qos_profile_sensor_data, sensors)
        best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches any publisher
        if cfg.command_type == "joint_trajectory":
            self._subscribe(JointTrajectory, cfg.command_topic, self._on_trajectory, best_effort, sensors)
        else:
            self._subscribe(Float64MultiArray, cfg.command_topic, self._on_array_command, best_effort, sensors)
        if cfg.chunk_topic:
            self._subscribe(ActionChunkMsg, cfg.chunk_topic, self._on_chunk, best_effort, sensors)
        if cfg.instruction_topic:
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self._subscribe(String, cfg.instruction_topic, self._on_instruction, latched, sensors)
        if cfg.intervention_topic:
            self._subscribe(Bool, cfg.intervention_topic, self._on_intervention, 10, sensors)
        if cfg.toggle_topic:
            self._subscribe(Bool, cfg.toggle_topic, self._on_toggle, 10, control)
        self.create_service(StartEpisode, START_SERVICE, self._on_start, callback_group=control)
        self.create_service(StopEpisode, STOP_SERVICE, self._on_stop, callback_group=control)
        self._status_pub = self.create_publisher(DiagnosticArray, cfg.status_topic, 10)
        self.create_timer(cfg.status_period_s, self._publish_status, callback_group=control)
        self.get_logger().info(f"ready: dataset {self._writer.root} ({self._writer.total_episodes} episodes), "
                               f"{len(cfg.camera_topics)} camera(s) at {cfg.fps} Hz, "
                               f"MCAP {'on' if cfg.record_mcap else 'off'}")

    def _subscribe(self, msg_type: type, topic: str, handler: Callable[[Any], None], qos: Any, group: Any) -> None:
        if topic not in self._mcap_topics:
            self.create_subscription(msg_type, topic, handler, qos, callback_group=group)
            return
        name = type_name(msg_type)

        def on_raw(raw: bytes) -> None:  # bytes for the MCAP as they came off the wire, then the message
            self._writer.add_raw(topic, name, raw, self.get_clock().now().nanoseconds)
            handler(deserialize_message(raw, msg_type))

        self.create_subscription(msg_type, topic, on_raw, qos, callback_group=group, raw=True)

    # -- inputs (executor threads) --
    def _sensor_stamp(self, stream: str, msg: Any) -> int | None:
        stamp_ns = convert.stamp_to_ns(msg.header.stamp)
        if stamp_ns == 0:
            self._writer.note_rejected(stream, "header.stamp is zero")
            return None
        return stamp_ns

    def _on_image(self, topic: str, key: str, msg: Image | CompressedImage) -> None:
        if not self._writer.recording:
            return
        stamp_ns = self._sensor_stamp(topic, msg)
        if stamp_ns is None:
            return
        try:
            rgb = convert.compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else convert.image_to_rgb(msg)
        except ObservationError as err:
            self._writer.note_rejected(topic, str(err))
            return
        self._writer.add_image(key, rgb, stamp_ns)

    def _on_joint_state(self, msg: JointState) -> None:
        if not self._writer.recording:
            return
        cfg = self._params.current
        stamp_ns = self._sensor_stamp(cfg.joint_states_topic, msg)
        if stamp_ns is None:
            return
        try:
            positions = convert.joint_positions(msg, cfg.joint_names)
        except ObservationError as err:
            self._writer.note_rejected(cfg.joint_states_topic, str(err))
            return
        self._writer.add_joint_state(positions, stamp_ns)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if not self._writer.recording:
            return
        cfg = self._params.current
        # A trajectory stamped 0 means "start now" (joint_trajectory_controller): stamp it on arrival.
        stamp_ns = convert.stamp_to_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
        try:
            action = convert.trajectory_command(msg, cfg.action_names)
        except ObservationError as err:
            self._writer.note_rejected(cfg.command_topic, str(err))
            return
        self._writer.add_command(action, stamp_ns)

    def _on_array_command(self, msg: Float64MultiArray) -> None:
        if not self._writer.recording:
            return
        cfg = self._params.current
        if len(msg.data) != len(cfg.action_names):
            self._writer.note_rejected(cfg.command_topic, f"{len(msg.data)} values for {len(cfg.action_names)} "
                                                          "action_names")
            return
        self._writer.add_command(np.asarray(msg.data, dtype=np.float64), self.get_clock().now().nanoseconds)

    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        if not self._writer.recording:
            return
        try:
            chunk = convert.msg_to_chunk(msg)
        except ChunkError as err:
            self._writer.note_rejected(self._params.current.chunk_topic, str(err))
            return
        self._writer.add_chunk(chunk)

    def _on_instruction(self, msg: String) -> None:
        self._instruction = msg.data

    def _on_intervention(self, msg: Bool) -> None:
        self._writer.mark_intervention(bool(msg.data), self.get_clock().now().nanoseconds)

    def _on_toggle(self, msg: Bool) -> None:
        if msg.data and not self._writer.recording:
            ok, text, _ = self._start("", "")
        elif not msg.data and self._writer.recording:
            summary = self._writer.stop_episode(keep=True, is_success=False, notes="stopped by the toggle topic")
            ok, text = summary.kept, summary.message
        else:
            return
        if ok:
            self.get_logger().info(f"toggle: {text}")
        else:
            self.get_logger().warning(f"toggle: {text}")

    # -- services --
    def _start(self, task: str, source: str) -> tuple[bool, str, int]:
        cfg = self._params.current
        task = task.strip() or self._instruction.strip() or cfg.default_task
        try:
            index = self._writer.start_episode(task, source or cfg.default_source)
        except RecordingError as err:
            return False, str(err), -1
        return True, f"recording episode {index}: {task!r}", index

    def _on_start(self, request: StartEpisode.Request, response: StartEpisode.Response) -> StartEpisode.Response:
        ok, text, index = self._start(request.task, request.source)
        response.success, response.message = ok, text
        response.episode_id = str(index) if ok else ""
        if ok:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(f"start refused: {text}")
        return response

    def _on_stop(self, request: StopEpisode.Request, response: StopEpisode.Response) -> StopEpisode.Response:
        try:
            summary = self._writer.stop_episode(request.keep, request.is_success, request.notes)
        except RecordingError as err:
            response.success, response.message = False, str(err)
            return response
        response.success = summary.kept == request.keep or summary.stop_reason == "low_disk"
        response.message = summary.message
        response.episode_id = str(summary.episode_index) if summary.kept else ""  # a discarded one has no id
        response.path = summary.path
        response.frame_count = summary.frame_count
        log = self.get_logger()
        if response.success:
            log.info(summary.message)
        else:
            log.error(summary.message)
        return response

    def _publish_status(self) -> None:
        st = self._writer.status()
        status = DiagnosticStatus(name="recorder_node", hardware_id=str(self._writer.root))
        if st.errors:
            status.level = DiagnosticStatus.ERROR
        elif st.dropped_frames or st.stale_frames:
            status.level = DiagnosticStatus.WARN
        else:
            status.level = DiagnosticStatus.OK
        status.message = (f"recording episode {st.episode_index}: {st.frames_written} frames" if st.recording
                          else f"idle: {st.total_episodes} episodes")
        values = {"recording": st.recording, "episode_index": st.episode_index, "task": st.task,
                  "source": st.source, "frames_written": st.frames_written, "dropped_frames": st.dropped_frames,
                  "stale_frames": st.stale_frames, "queue_fill": round(st.queue_fill, 3),
                  "free_disk_mb": round(st.free_disk_mb), "total_episodes": st.total_episodes,
                  "errors": "; ".join(st.errors)}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)

    def close(self) -> EpisodeSummary | None:
        """Finalise a running episode (kept, stop_reason=shutdown)."""
        return self._writer.close() if self._writer is not None else None

    def _close_and_log(self) -> None:
        summary = self.close()
        if summary is not None:
            self.get_logger().info(f"shutdown: {summary.message}")

    def begin_shutdown(self) -> Callable[[], bool]:
        """Finalise the running episode on a thread; returns whether that is done. A finalisation
        the runner does not wait for is completed from the staged files at the next start."""
        if self._closing is None:
            self._closing = threading.Thread(target=self._close_and_log, name="recorder-close")
            self._closing.start()
        return lambda: not self._closing.is_alive()

    def destroy_node(self) -> None:
        if self._closing is None:
            self._close_and_log()
        elif self._closing.is_alive():
            self.get_logger().warning("shutdown: the episode is still being finalised; if this process ends "
                                      "first, the next start completes it from its staged files")
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node("recorder_node", RecorderNode, lambda: MultiThreadedExecutor(num_threads=6), args)


if __name__ == "__main__":
    main()
