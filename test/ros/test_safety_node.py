"""safety_node over real DDS: rate, arming, e-stop, watchdog, clip and rejection counters."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from test.conftest import wait_for
from test.ros.sensors import SensorPublisher
from vla_ros.ros import convert
from vla_ros.types import ActionChunk
from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg

ROBOT_TOPIC = "/arm_controller/joint_trajectory"
DRY_RUN_TOPIC = "/vla/safety/dry_run_command"


class SafetyClient:
    """The test's side: chunks at 10 Hz near the published joint state, listeners, services."""

    def __init__(self, ros, sensors: SensorPublisher, command_type=JointTrajectory,
                 robot_topic: str = ROBOT_TOPIC, streaming: bool = True) -> None:
        self.node = ros.node("safety_test_client")
        self.sensors = sensors
        self.robot: list = []
        self.dry_run: list = []
        self.status: dict[str, str] = {}
        self.status_count = 0
        self.node.create_subscription(command_type, robot_topic, self.robot.append, 10)
        self.node.create_subscription(command_type, DRY_RUN_TOPIC, self.dry_run.append, 10)
        self.node.create_subscription(DiagnosticArray, "/vla/safety/status", self._on_status, 10)
        self.chunk_pub = self.node.create_publisher(ActionChunkMsg, "/vla/action_chunk", 10)
        self.estop_pub = self.node.create_publisher(Bool, "/vla/estop", 10)
        self.offset = np.zeros(len(sensors.joint_names))  # added to the measured joints in every chunk
        self.streaming = streaming
        self.chunk_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_status(self, msg: DiagnosticArray) -> None:
        self.status = {kv.key: kv.value for kv in msg.status[0].values}
        self.status_count += 1

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if self.streaming:
                rows = np.tile(self.sensors.positions + self.offset, (10, 1))
                self.publish_chunk(rows)

    def publish_chunk(self, rows: np.ndarray, names: tuple[str, ...] | None = None,
                      dt_s: float = 0.1) -> None:
        self.chunk_id += 1
        chunk = ActionChunk(self.chunk_id, self.node.get_clock().now().nanoseconds, "joint_position",
                            names or tuple(self.sensors.joint_names), dt_s, rows)
        self.chunk_pub.publish(convert.chunk_to_msg(chunk))

    def call(self, srv_type, name: str, request):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=10.0), f"{name} not available"
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        assert done.wait(10.0), f"no answer from {name}"
        return future.result()

    def set_parameter(self, name: str, value: float):
        param = ParameterMsg(name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE,
                                                             double_value=value))
        return self.call(SetParameters, "/safety_node/set_parameters",
                         SetParameters.Request(parameters=[param])).results[0]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _param_arg(name: str, value: object) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{name}:={text}"


@pytest.fixture
def rig(ros, tmp_path):
    """A factory: rig(**params) starts safety_node in its own process (as deployed: no GIL shared
    with the test's publishers), plus the sensors and the client; everything stops after."""
    started = []

    def start(command_type=JointTrajectory, robot_topic=ROBOT_TOPIC, streaming=True, **params):
        args = [sys.executable, "-m", "vla_ros.ros.safety_node", "--ros-args"]
        for name, value in params.items():
            args += ["-p", _param_arg(name, value)]
        log = open(tmp_path / f"safety_node_{len(started)}.log", "w")
        process = subprocess.Popen(args, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
        sensors = SensorPublisher(ros.node(f"sensors_{len(started)}"), rate_hz=50.0)
        sensors.publish_images = False  # joint states only: safety_node reads no camera
        sensors.__enter__()
        client = SafetyClient(ros, sensors, command_type, robot_topic, streaming)
        started.append((process, log, sensors, client))
        wait_for(lambda: client.status_count > 0, timeout_s=30.0, what="safety_node status")
        return client

    try:
        yield start
    finally:
        for process, log, sensors, client in started:
            client.stop()
            sensors.__exit__(None, None, None)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _duration_s(point) -> float:
    return point.time_from_start.sec + point.time_from_start.nanosec * 1e-9


def _median_interval_s(messages: list[JointTrajectory]) -> float:
    stamps = [convert.stamp_to_ns(m.header.stamp) for m in messages]
    return statistics.median(np.diff(stamps)) * 1e-9


def test_armed_commands_flow_at_the_configured_rate_and_rate_changes_live(rig):
    client = rig(start_armed=True, control_rate_hz=50.0, **{"output.points_per_command": 3})
    wait_for(lambda: len(client.robot) >= 30, what="30 robot commands")
    msg = client.robot[-1]
    assert list(msg.joint_names) == list(client.sensors.joint_names) and len(msg.points) == 3
    assert [_duration_s(p) for p in msg.points] == pytest.approx([0.02, 0.04, 0.06])
    np.testing.assert_allclose(msg.points[0].positions, client.sensors.positions, atol=1e-9)
    assert 0.5 * 0.02 < _median_interval_s(client.robot[-20:]) < 2.0 * 0.02
    assert client.dry_run == []
    assert client.set_parameter("control_rate_hz", 20.0).successful
    wait_for(lambda: _duration_s(client.robot[-1].points[0]) == pytest.approx(0.05), what="20 Hz commands")
    count = len(client.robot)
    wait_for(lambda: len(client.robot) >= count + 20, what="20 more commands")
    assert 0.5 * 0.05 < _median_interval_s(client.robot[-15:]) < 2.0 * 0.05
    refused = client.set_parameter("limits.max_step_rad", 0.1)
    assert not refused.successful


def test_disarmed_sends_nothing_to_the_robot_until_armed(rig):
    client = rig()
    wait_for(lambda: len(client.dry_run) >= 20, what="dry-run commands")
    assert client.robot == [] and client.status.get("armed") == "false"
    response = client.call(SetBool, "/vla/safety/arm", SetBool.Request(data=True))
    assert response.success and ROBOT_TOPIC in response.message
    wait_for(lambda: len(client.robot) >= 5, what="robot commands after arming")
    wait_for(lambda: client.status.get("armed") == "true", what="status armed")


def test_float64_array_output(rig):
    topic = "/forward_position_controller/commands"
    client = rig(Float64MultiArray, topic, start_armed=True,
                 **{"output.mode": "float64_array", "output.topic": topic})
    wait_for(lambda: len(client.robot) >= 5, what="Float64MultiArray commands")
    np.testing.assert_allclose(client.robot[-1].data, client.sensors.positions, atol=1e-9)


def test_estop_latches_and_reset_clears(rig):
    client = rig(start_armed=True)
    wait_for(lambda: client.status.get("state") == "running", what="running")
    client.estop_pub.publish(Bool(data=True))
    wait_for(lambda: client.status.get("estop_latched") == "true" and client.status.get("state") == "estop",
             what="e-stop latched")
    wait_for(lambda: client.status.get("rejected.estop_latched", "0") != "0", what="chunks refused")
    refused = client.call(Trigger, "/vla/safety/reset", Trigger.Request())
    assert not refused.success and "still pressed" in refused.message
    client.estop_pub.publish(Bool(data=False))
    wait_for(lambda: client.status.get("estop_pressed") == "false", what="e-stop released")
    assert client.status["estop_latched"] == "true"
    response = client.call(Trigger, "/vla/safety/reset", Trigger.Request())
    assert response.success, response.message
    wait_for(lambda: client.status.get("state") == "running" and client.status.get("run_id") == "2",
             what="a new run after reset")


def test_estop_pressed_before_start_latches_and_best_effort_publishers_are_heard(ros, rig):
    """Bugs: an e-stop pressed before the node started (latched publisher) left it unlatched, and a
    BEST_EFFORT publisher (joysticks, teleop) was QoS-incompatible and never heard."""
    node = ros.node("estop_sources")
    latched = node.create_publisher(Bool, "/vla/estop", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    best_effort = node.create_publisher(Bool, "/vla/estop", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE))
    latched.publish(Bool(data=True))
    client = rig(start_armed=True)
    wait_for(lambda: client.status.get("estop_latched") == "true", what="latched at start")
    assert client.robot == []
    latched.publish(Bool(data=False))
    wait_for(lambda: client.status.get("estop_pressed") == "false", what="released")
    assert client.call(Trigger, "/vla/safety/reset", Trigger.Request()).success
    wait_for(lambda: client.status.get("state") == "running", what="running after reset")
    wait_for(lambda: best_effort.get_subscription_count() >= 1, what="best-effort publisher matched")
    best_effort.publish(Bool(data=True))
    wait_for(lambda: client.status.get("estop_latched") == "true", what="latched by a best-effort press")


def test_watchdog_holds_when_chunks_or_joint_states_stop(rig):
    client = rig(start_armed=True, **{"watchdog.chunk_timeout_s": 0.3})
    wait_for(lambda: client.status.get("state") == "running", what="running")
    client.streaming = False
    wait_for(lambda: client.status.get("hold_reason") == "chunk_timeout" and client.status.get("state") == "hold",
             what="chunk-timeout hold")
    assert client.status["last_reason"].startswith("hold: no chunk accepted")
    count, seen = len(client.robot), client.status_count  # silent hold at rest: nothing more is sent
    wait_for(lambda: client.status_count >= seen + 3, what="three more status messages")
    assert len(client.robot) == count
    client.streaming = True
    wait_for(lambda: client.status.get("state") == "running", what="running again")
    client.sensors.publish_joints = False
    wait_for(lambda: client.status.get("hold_reason") == "joint_state_stale", what="stale joint-state hold")


def test_clips_are_counted_per_joint(rig):
    client = rig()
    client.offset[1] = 0.3  # joint_2 asked to move 0.3 rad at once: the limiter ramps, counting clips
    wait_for(lambda: int(client.status.get("clips.joint_2", "0")) > 0, what="clips on joint_2")
    assert client.status["clips.joint_1"] == "0"


def test_bad_chunks_are_rejected_and_counted(rig):
    client = rig(streaming=False)
    names = tuple(client.sensors.joint_names)
    good = np.tile(client.sensors.positions, (10, 1))
    client.publish_chunk(np.where(np.eye(10, 7) > 0, np.nan, good))
    client.publish_chunk(good, names=names[:6] + ("elbow",))
    client.publish_chunk(good, dt_s=0.0)
    malformed = convert.chunk_to_msg(ActionChunk(99, client.node.get_clock().now().nanoseconds,
                                                 "joint_position", names, 0.1, good))
    malformed.horizon = 11  # 70 values do not fill 11 x 7
    client.chunk_pub.publish(malformed)
    wait_for(lambda: client.status.get("rejected_chunks") == "4", what="4 rejected chunks")
    assert (client.status["rejected.non_finite"], client.status["rejected.name_mismatch"],
            client.status["rejected.bad_dt"], client.status["rejected.bad_shape"]) == ("1", "1", "1", "1")
    assert client.status["accepted_chunks"] == "0" and client.dry_run == []


def test_missing_urdf_refuses_to_start(tmp_path):
    missing = tmp_path / "nope.urdf"
    result = subprocess.run([sys.executable, "-m", "vla_ros.ros.safety_node", "--ros-args", "-p",
                             _param_arg("limits.urdf_path", missing)],
                            env=os.environ.copy(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"safety_node cannot start: limits.urdf_path: {missing} not found" in result.stderr + result.stdout
