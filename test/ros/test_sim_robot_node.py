"""sim_robot_node over real DDS: sensors at the configured sizes, commands move the arm, resets."""

from __future__ import annotations

import json

import numpy as np
from builtin_interfaces.msg import Duration
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from test.conftest import wait_for
from vla_ros.config import from_flat
from vla_ros.config.sim import SIM_JOINT_NAMES, SimConfig
from vla_ros.ros import convert
from vla_ros.ros.sim_robot_node import SimRobotNode


class Listener:
    """Collects joint states, images and task results (sensor-data QoS, like policy_node)."""

    def __init__(self, ros) -> None:
        self.node = ros.node("sim_test_listener")
        self.joint_states: list[JointState] = []
        self.images: list[Image] = []
        self.results: list[dict] = []
        self.node.create_subscription(JointState, "/joint_states", self.joint_states.append,
                                      qos_profile_sensor_data)
        self.node.create_subscription(Image, "/camera/image_raw", self.images.append, qos_profile_sensor_data)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/sim/task_result",
                                      lambda m: self.results.append(json.loads(m.data)), latched)

    def positions(self) -> np.ndarray:
        return convert.joint_positions(self.joint_states[-1], SIM_JOINT_NAMES)

    def wait_for_new_joint_states(self, count: int) -> None:
        seen = len(self.joint_states)
        wait_for(lambda: len(self.joint_states) >= seen + count, what=f"{count} more joint states")


def start(ros, **overrides) -> tuple[SimRobotNode, Listener]:
    listener = Listener(ros)
    node = ros.add(SimRobotNode(from_flat(SimConfig, overrides), context=ros.context))
    wait_for(lambda: listener.joint_states and listener.images, what="joint states and images")
    return node, listener


def trajectory(names, points) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    for t_s, q in points:
        sec = int(t_s)
        msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in q],
                                               time_from_start=Duration(sec=sec, nanosec=int((t_s - sec) * 1e9))))
    return msg


def test_joint_states_and_images_arrive_with_configured_sizes(ros):
    _, listener = start(ros)
    state = listener.joint_states[-1]
    assert tuple(state.name) == SIM_JOINT_NAMES and len(state.velocity) == 7
    np.testing.assert_allclose(listener.positions(), SimConfig().initial_positions, atol=1e-9)
    rgb = convert.image_to_rgb(listener.images[-1])
    assert rgb.shape == (240, 320, 3) and rgb.std() > 10  # a rendered scene, not a blank frame
    assert listener.images[-1].header.frame_id == "camera_front"
    wait_for(lambda: listener.results, what="task result")
    assert listener.results[-1]["task"] == "pour" and listener.results[-1]["success"] is False


def test_joint_trajectory_moves_the_arm_and_bad_commands_are_refused(ros):
    node, listener = start(ros)
    publisher = listener.node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", 10)
    wait_for(lambda: publisher.get_subscription_count() > 0, what="command subscriber")
    names = list(reversed(SIM_JOINT_NAMES))  # order in the message does not matter
    home = np.asarray(SimConfig().initial_positions)
    goal = home + [0.3, -0.2, 0.1, 0.0, 0.0, 0.2, 0.8]
    publisher.publish(trajectory(names, [(0.3, goal[::-1])]))
    wait_for(lambda: np.allclose(listener.positions(), goal, atol=1e-6), what="arm at the trajectory goal")

    bad = goal.copy()
    bad[2] = np.nan
    publisher.publish(trajectory(names, [(0.3, bad[::-1])]))
    publisher.publish(trajectory(names[:6], [(0.3, goal[::-1][:6])]))  # a joint missing
    listener.wait_for_new_joint_states(20)
    np.testing.assert_allclose(listener.positions(), goal, atol=1e-6)


def test_float64_array_commands(ros):
    _, listener = start(ros, command_type="float64_array", command_topic="/forward_position_controller/commands")
    publisher = listener.node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    wait_for(lambda: publisher.get_subscription_count() > 0, what="command subscriber")
    goal = np.asarray(SimConfig().initial_positions) + [-0.2, 0, 0, 0, 0, 0, 1.0]
    publisher.publish(Float64MultiArray(data=goal.tolist()))
    wait_for(lambda: np.allclose(listener.positions(), goal, atol=1e-6), what="arm at the commanded positions")


def _call(node, srv_type, name: str, request):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10.0), f"service {name} not found"
    return client.call(request, timeout_sec=10.0)


def test_task_and_seed_parameters_reset_the_sim(ros):
    _, listener = start(ros)
    params = [Parameter("task", value="write").to_parameter_msg(), Parameter("seed", value=11).to_parameter_msg()]
    results = _call(listener.node, SetParameters, "/sim_robot_node/set_parameters",
                    SetParameters.Request(parameters=params)).results
    assert all(r.successful for r in results), [r.reason for r in results]
    wait_for(lambda: listener.results and listener.results[-1]["task"] == "write"
             and listener.results[-1]["seed"] == 11, what="a write task result")
    assert listener.results[-1]["instruction"] == "write the letter N on the paper"

    bad = [Parameter("task", value="juggle").to_parameter_msg()]
    result = _call(listener.node, SetParameters, "/sim_robot_node/set_parameters",
                   SetParameters.Request(parameters=bad)).results[0]
    assert not result.successful and "not one of" in result.reason


def test_reset_service_homes_the_arm(ros):
    _, listener = start(ros, command_type="float64_array", command_topic="/forward_position_controller/commands")
    publisher = listener.node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    wait_for(lambda: publisher.get_subscription_count() > 0, what="command subscriber")
    home = np.asarray(SimConfig().initial_positions)
    publisher.publish(Float64MultiArray(data=(home + [0.4, 0, 0, 0, 0, 0, 0]).tolist()))
    wait_for(lambda: listener.positions()[0] > 0.39, what="arm moved")
    response = _call(listener.node, Trigger, "/sim/reset", Trigger.Request())
    assert response.success and "pour the cup into the bowl" in response.message
    wait_for(lambda: np.allclose(listener.positions(), home, atol=1e-9), what="arm back home")
