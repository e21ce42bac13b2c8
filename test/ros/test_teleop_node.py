"""teleop_node over real DDS: leader following through safety_node, takeover of a running RunPolicy goal,
the device watchdog and refused device messages."""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from test.conftest import wait_for
from test.fakes import RampPolicy
from test.ros.sensors import SensorPublisher
from test.ros.test_policy_node import GoalClient
from vla_ros.config import load_config
from vla_ros.config.policy import DEFAULT_JOINTS, PolicyNodeConfig
from vla_ros.config.recorder import RecorderConfig
from vla_ros.config.safety import SafetyConfig
from vla_ros.config.teleop import TeleopConfig
from vla_ros.paths import config_file
from vla_ros.recording.reader import LeRobotDatasetReader
from vla_ros.ros import convert
from vla_ros.ros.policy_node import PolicyNode
from vla_ros.ros.recorder_node import RecorderNode
from vla_ros.ros.safety_node import SafetyNode
from vla_ros.ros.teleop_node import CHUNK_ID_BASE, ENGAGE_SERVICE, TeleopNode
from vla_ros_interfaces.msg import ActionChunk

HOME = np.array([0.0, 0.0, 1.65, 0.0, 1.49, 0.0, 0.0])
ROBOT_TOPIC = "/arm_controller/joint_trajectory"


class Operator:
    """The test's side: a leader arm publishing at 25 Hz, a follower that obeys the robot commands,
    and listeners for chunks, the engaged flag and teleop's status."""

    def __init__(self, ros, sensors: SensorPublisher) -> None:
        self.node = ros.node("teleop_test_operator")
        self.sensors = sensors
        self.leader = HOME.copy()
        self.leader_names = list(DEFAULT_JOINTS)
        self.publish_leader = True
        self.commands: list[np.ndarray] = []
        self.chunks: list[tuple[bool, ActionChunk]] = []  # (engaged when it arrived, chunk)
        self.engaged = False
        self.status: dict[str, str] = {}
        self.leader_pub = self.node.create_publisher(JointState, "/leader/joint_states", qos_profile_sensor_data)
        self.joy_pub = self.node.create_publisher(Joy, "/joy", qos_profile_sensor_data)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(Bool, "/vla/teleop/engaged", self._on_engaged, latched)
        self.node.create_subscription(ActionChunk, "/vla/action_chunk",
                                      lambda m: self.chunks.append((self.engaged, m)), 50)
        self.node.create_subscription(JointTrajectory, ROBOT_TOPIC, self._on_command, 50)
        self.node.create_subscription(DiagnosticArray, "/vla/teleop/status", self._on_status, 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_engaged(self, msg: Bool) -> None:
        self.engaged = msg.data

    def _on_status(self, msg: DiagnosticArray) -> None:
        self.status = {kv.key: kv.value for kv in msg.status[0].values}

    def _on_command(self, msg: JointTrajectory) -> None:
        command = np.asarray(msg.points[0].positions)
        self.commands.append(command)
        self.sensors.positions = command  # the simulated follower reaches every command

    def _run(self) -> None:
        while not self._stop.wait(0.04):
            if self.publish_leader:
                stamp = self.node.get_clock().now().nanoseconds
                self.leader_pub.publish(convert.make_joint_state(tuple(self.leader_names), self.leader, stamp))

    def engage(self, on: bool) -> SetBool.Response:
        client = self.node.create_client(SetBool, ENGAGE_SERVICE)
        assert client.wait_for_service(timeout_sec=10.0)
        done = threading.Event()
        future = client.call_async(SetBool.Request(data=on))
        future.add_done_callback(lambda _: done.set())
        assert done.wait(10.0)
        return future.result()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _safety(ros) -> SafetyNode:
    cfg = load_config(config_file("sim.yaml"), "safety_node", SafetyConfig)
    return ros.add(SafetyNode(cfg, context=ros.context))


def test_takeover_mid_goal_pauses_the_policy_marks_intervention_frames_and_hands_back(ros, tmp_path):
    """Catches the policy publishing while a person holds the arm, a takeover that is not recorded as
    intervention, a hand-back from a stale observation (safety_node refuses it as out of order), and
    a goal result that forgets the takeover."""
    _safety(ros)
    ros.add(PolicyNode(policy=RampPolicy(step=0.005), config=PolicyNodeConfig(observation_wait_s=2.0),
                       context=ros.context))
    ros.add(TeleopNode(TeleopConfig(), context=ros.context))
    ros.add(RecorderNode(RecorderConfig(dataset_root=str(tmp_path / "dataset"), fps=10, min_free_disk_mb=0,
                                        intervention_topic="/vla/teleop/engaged"), context=ros.context))
    safety_status: dict[str, str] = {}
    sensors_node = ros.node("teleop_test_sensors")
    sensors_node.create_subscription(DiagnosticArray, "/vla/safety/status",
                                     lambda m: safety_status.update({kv.key: kv.value for kv in m.status[0].values}),
                                     10)
    with SensorPublisher(sensors_node, rate_hz=30.0) as sensors:
        sensors.positions = HOME.copy()
        operator = Operator(ros, sensors)
        goals = GoalClient(ros)
        try:
            handle = goals.send(time_limit_s=7.0, record=True)
            wait_for(lambda: len(goals.feedback) >= 5, 20.0, "policy chunks")
            operator.leader = sensors.positions + np.array([0.25, -0.2, 0.1, 0, 0, 0, 0.0])
            assert operator.engage(True).success
            wait_for(lambda: operator.engaged, 10.0, "engaged")
            engaged_at = len(operator.commands)
            wait_for(lambda: operator.status.get("state") == "engaged", 20.0, "teleop to reach the leader")
            wait_for(lambda: np.abs(sensors.positions - operator.leader).max() < 0.05, 20.0,
                     "the arm to follow the leader")
            assert operator.engage(False).success
            wait_for(lambda: not operator.engaged, 10.0, "teleop released")
            result = goals.result(handle, timeout_s=30.0)
        finally:
            operator.stop()
    assert result.outcome == 0, result.reason
    assert result.intervention_count == 1 and result.intervention_s > 0.5
    assert any(f.intervention_active for f in goals.feedback)
    # At most the one chunk already on its way when the engaged flag went out (the policy checks the flag
    # again after each inference; DDS does not order two publishers' messages).
    policy_while_engaged = [c for engaged, c in operator.chunks if engaged and c.chunk_id < CHUNK_ID_BASE]
    assert len(policy_while_engaged) <= 1, "the policy published while teleop held the arm"
    policy_after = [c for engaged, c in operator.chunks[len(operator.chunks) // 2:]
                    if c.chunk_id < CHUNK_ID_BASE]
    assert policy_after, "the policy never resumed"
    teleop_chunks = [c for _, c in operator.chunks if c.chunk_id >= CHUNK_ID_BASE]
    assert teleop_chunks
    # No jump at the switch-over: teleop's first target is the measured position (within one step), and
    # safety_node refused no chunk as out of order but that in-flight one (a hand-back from a stale
    # observation would be) and none at the start-up gate (a far first target). Late chunks on a loaded
    # machine (all steps past) are another matter.
    first = np.asarray(teleop_chunks[0].actions[:7])
    commands = np.stack(operator.commands)
    np.testing.assert_allclose(first, commands[engaged_at - 1], atol=0.1)
    assert safety_status.get("rejected.startup_too_far") == "0", safety_status
    assert int(safety_status.get("rejected.out_of_order")) <= len(policy_while_engaged), safety_status
    steps = np.abs(np.diff(commands, axis=0)).max(axis=0)
    assert np.all(steps <= 3 * np.array([1.5, 1.5, 1.5, 2.5, 2.5, 3.0, 2.0]) / 50.0 + 1e-9), steps
    reader = LeRobotDatasetReader(tmp_path / "dataset")
    sources = list(reader.episode_table(0)["source"])
    assert reader.episodes[0].source == "policy"
    assert sources.count("intervention") >= 5 and sources.count("policy") >= 5, sources


def test_stale_leader_stops_motion_and_bad_messages_are_counted(ros):
    """Catches teleop chunks that keep moving after the leader fell silent, and malformed leader or
    Joy messages that are acted on instead of refused and counted."""
    sensors_node = ros.node("teleop_test_sensors")
    ros.add(TeleopNode(TeleopConfig(device_timeout_s=0.2), context=ros.context))
    with SensorPublisher(sensors_node, rate_hz=30.0) as sensors:
        sensors.publish_images = False
        sensors.positions = HOME.copy()
        operator = Operator(ros, sensors)
        try:
            wait_for(lambda: operator.status.get("state") == "idle", 10.0, "teleop status")
            assert operator.engage(True).success
            wait_for(lambda: operator.status.get("state") == "engaged", 10.0, "engaged")
            count = len(operator.chunks)
            operator.leader = HOME + np.array([2.0, 0, 0, 0, 0, 0, 0])  # the follower needs ~1.5 s to get there
            wait_for(lambda: len(operator.chunks) > count + 8, 10.0, "teleop chunks")
            operator.publish_leader = False
            silent_from = len(operator.chunks)
            wait_for(lambda: len(operator.chunks) > silent_from + 40, 20.0, "chunks after the leader stopped")
            targets = [np.asarray(c.actions[:7]) for _, c in operator.chunks[silent_from:]]
            # Within the watchdog (0.2 s = 5 ticks) plus braking, the targets stop changing for good.
            settled = targets[20]
            for later in targets[20:]:
                np.testing.assert_array_equal(later, settled)
            assert np.abs(targets[0] - settled).max() > 0, "it was not moving when the leader fell silent"
            # Bad leader messages: refused and counted by reason, never followed.
            operator.leader_names = list(DEFAULT_JOINTS[:6]) + ["finger"]
            operator.publish_leader = True
            wait_for(lambda: int(operator.status.get("refused.unknown_name", "0")) > 3, 10.0, "unknown names")
            operator.leader_names = list(DEFAULT_JOINTS)
            operator.leader = HOME + np.array([np.nan, 0, 0, 0, 0, 0, 0])
            wait_for(lambda: int(operator.status.get("refused.non_finite", "0")) > 3, 10.0, "NaN refusals")
            operator.publish_leader = False
            count = len(operator.chunks)
            wait_for(lambda: len(operator.chunks) > count + 5, 10.0, "chunks")
            np.testing.assert_array_equal(np.asarray(operator.chunks[-1][1].actions[:7]), settled)
        finally:
            operator.stop()


def test_joy_buttons_record_an_episode_and_bad_joy_messages_are_counted(ros, tmp_path):
    """Catches record buttons that do not reach the recorder (one person could not collect alone), a
    success mark that is lost, and malformed Joy messages that are not refused and counted."""
    cfg = TeleopConfig(device="joy")
    joy_cfg = cfg.joy
    ros.add(TeleopNode(cfg, context=ros.context))
    ros.add(RecorderNode(RecorderConfig(dataset_root=str(tmp_path / "dataset"), fps=10, min_free_disk_mb=0),
                         context=ros.context))
    with SensorPublisher(ros.node("teleop_test_sensors"), rate_hz=30.0) as sensors:
        sensors.positions = HOME.copy()
        operator = Operator(ros, sensors)
        operator.publish_leader = False
        command_pub = operator.node.create_publisher(JointTrajectory, ROBOT_TOPIC, 10)

        def press(*buttons, axes=(0.0,) * 6) -> None:
            for pressed in (buttons, ()):  # a press, then the release
                values = [0] * 10
                for b in pressed:
                    values[b] = 1
                operator.joy_pub.publish(Joy(axes=list(axes), buttons=values))
                time.sleep(0.15)

        try:
            wait_for(lambda: operator.status.get("state") == "idle", 10.0, "teleop status")
            recorder_status: dict[str, str] = {}
            operator.node.create_subscription(
                DiagnosticArray, "/vla/recorder/status",
                lambda m: recorder_status.update({kv.key: kv.value for kv in m.status[0].values}), 10)
            press(joy_cfg.record_start_button)
            wait_for(lambda: recorder_status.get("recording") == "True", 10.0, "recording started by button")
            for _ in range(15):  # robot commands for the frames
                msg = JointTrajectory(joint_names=list(DEFAULT_JOINTS))
                msg.points.append(JointTrajectoryPoint(positions=list(HOME)))
                command_pub.publish(msg)
                time.sleep(0.1)
            press(joy_cfg.success_button)
            press(joy_cfg.record_stop_button)
            wait_for(lambda: recorder_status.get("recording") == "False", 10.0, "recording stopped by button")
            operator.joy_pub.publish(Joy(axes=[0.0, float("nan"), 0, 0, 0, 0], buttons=[0] * 10))
            operator.joy_pub.publish(Joy(axes=[0.0] * 2, buttons=[0] * 10))
            wait_for(lambda: operator.status.get("refused.non_finite") == "1"
                     and operator.status.get("refused.wrong_size") == "1", 10.0, "refused Joy messages counted")
        finally:
            operator.stop()
    reader = LeRobotDatasetReader(tmp_path / "dataset")
    assert reader.num_episodes == 1 and reader.episodes[0].is_success
