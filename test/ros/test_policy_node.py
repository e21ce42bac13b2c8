"""policy_node over real DDS with a deterministic test policy."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.parameter import Parameter

from test.conftest import wait_for
from test.fakes import RampPolicy
from test.ros.sensors import SensorPublisher
from vla_ros.config import load_config
from vla_ros.config.policy import DEFAULT_JOINTS, PolicyNodeConfig
from vla_ros.errors import PolicyMismatchError
from vla_ros.paths import default_checkpoint_dir
from vla_ros.ros.policy_node import PolicyNode, read_contract
from vla_ros_interfaces.action import RunPolicy
from vla_ros_interfaces.msg import ActionChunk

Result = RunPolicy.Result


class GoalClient:
    """Sends RunPolicy goals and collects published chunks and feedback."""

    def __init__(self, ros) -> None:
        clients = []
        self.node = ros.node("policy_test_client",
                             setup=lambda node: clients.append(ActionClient(node, RunPolicy, "/vla/run_policy")))
        self.client = clients[0]
        self.chunks: list[ActionChunk] = []
        self.feedback: list = []
        self.node.create_subscription(ActionChunk, "/vla/action_chunk", self.chunks.append, 10)
        assert self.client.wait_for_server(timeout_sec=10.0), "action server not found"

    def send(self, instruction="pour the water into the bowl", time_limit_s=0.0, max_chunks=0, record=False):
        goal = RunPolicy.Goal(instruction=instruction, time_limit_s=time_limit_s, max_chunks=max_chunks,
                              record=record)
        accepted = threading.Event()
        holder = {}

        def on_goal(fut):
            holder["handle"] = fut.result()
            accepted.set()

        self.client.send_goal_async(goal, feedback_callback=lambda fb: self.feedback.append(fb.feedback)
                                    ).add_done_callback(on_goal)
        assert accepted.wait(10.0), "no goal response"
        return holder["handle"]

    @staticmethod
    def result(handle, timeout_s=20.0):
        done = threading.Event()
        holder = {}

        def on_result(fut):
            holder["result"] = fut.result().result
            done.set()

        handle.get_result_async().add_done_callback(on_result)
        assert done.wait(timeout_s), "no result"
        return holder["result"]


def _stamp_ns(chunk: ActionChunk) -> int:
    return chunk.header.stamp.sec * 10**9 + chunk.header.stamp.nanosec


def start_policy_node(ros, policy=None, **overrides) -> PolicyNode:
    cfg = PolicyNodeConfig(**{"observation_wait_s": 1.0, "replan_period_s": 0.05, **overrides})
    return ros.add(PolicyNode(policy=policy or RampPolicy(), config=cfg, context=ros.context))


def test_goal_yields_chunks_with_shape_names_stamp_and_dt(ros):
    policy = RampPolicy(horizon=8, dt_s=0.1)
    start_policy_node(ros, policy)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")) as sensors:
        handle = client.send(max_chunks=3)
        assert handle.accepted
        result = client.result(handle)
    assert result.outcome == Result.OUTCOME_COMPLETED, result.reason
    assert result.chunk_count == 3 and "chunk limit" in result.reason
    wait_for(lambda: len(client.chunks) == 3, what="3 chunks on /vla/action_chunk")
    wait_for(lambda: len(client.feedback) == 3, what="3 feedback messages")  # not ordered with the result
    for chunk, obs in zip(client.chunks, policy.calls):
        assert list(chunk.names) == list(DEFAULT_JOINTS)
        assert chunk.horizon == 8 and chunk.dt == pytest.approx(0.1)
        assert chunk.action_space == "joint_position"
        actions = np.asarray(chunk.actions).reshape(8, len(DEFAULT_JOINTS))
        np.testing.assert_allclose(actions[0], sensors.positions + 0.01)
        assert _stamp_ns(chunk) == obs.stamp_ns > 0
    ids = [c.chunk_id for c in client.chunks]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert client.feedback[0].kept_expert_tokens == 32


def test_cancel_ends_goal_and_stops_chunks(ros):
    """Kills: a goal loop that publishes chunks after it was canceled, or counts them wrong in the result."""
    policy = RampPolicy()
    start_policy_node(ros, policy)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")):
        handle = client.send()
        wait_for(lambda: len(client.chunks) >= 2, what="chunks before cancel")
        handle.cancel_goal_async()
        result = client.result(handle, timeout_s=5.0)
        assert result.outcome == Result.OUTCOME_CANCELED
        # A second goal's chunk leaves the same publisher after every chunk of the first, and reliable
        # delivery keeps one writer's order: once it is here, every chunk of the first goal is here too.
        second = client.result(client.send(max_chunks=1))
        assert second.outcome == Result.OUTCOME_COMPLETED, second.reason
        marker_ns = policy.calls[-1].stamp_ns
        wait_for(lambda: any(_stamp_ns(c) == marker_ns for c in client.chunks), what="the second goal's chunk")
    first_goal = list(itertools.takewhile(lambda c: _stamp_ns(c) != marker_ns, client.chunks))
    assert len(first_goal) == result.chunk_count >= 2


def test_stale_camera_aborts_naming_topic(ros):
    start_policy_node(ros, observation_wait_s=0.5)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")) as sensors:
        sensors.publish_images = False
        result = client.result(client.send())
    assert result.outcome == Result.OUTCOME_ABORTED
    assert "/camera/image_raw" in result.reason
    assert not client.chunks


@pytest.mark.parametrize("bad", ["nan", "inf", "missing"])
def test_bad_joint_state_aborts_naming_joint(ros, bad):
    start_policy_node(ros)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")) as sensors:
        if bad == "missing":
            sensors.joint_names = sensors.joint_names[:4] + sensors.joint_names[5:]
            sensors.positions = sensors.positions[:6]
        else:
            positions = sensors.positions.copy()
            positions[4] = np.nan if bad == "nan" else np.inf
            sensors.positions = positions
        result = client.result(client.send())
    assert result.outcome == Result.OUTCOME_ABORTED
    assert "joint_5" in result.reason
    assert not client.chunks


def test_unsupported_encoding_aborts_naming_it(ros):
    start_policy_node(ros)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")) as sensors:
        sensors.encoding = "16UC1"
        result = client.result(client.send())
    assert result.outcome == Result.OUTCOME_ABORTED
    assert "16UC1" in result.reason


def test_wrong_image_size_is_resized_or_refused(ros):
    policy = RampPolicy()
    node = start_policy_node(ros, policy)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")) as sensors:
        sensors.size_hw = (120, 160)
        result = client.result(client.send(max_chunks=1))
        assert result.outcome == Result.OUTCOME_COMPLETED, result.reason
        assert policy.calls[-1].images[0].shape == (240, 320, 3)
        node.set_parameters([node.get_parameter("resize_mismatched_images").__class__(
            "resize_mismatched_images", value=False)])
        result = client.result(client.send(max_chunks=1))
    assert result.outcome == Result.OUTCOME_ABORTED
    assert "120x160" in result.reason and "240x320" in result.reason


def _set_params(ros, values: dict) -> list:
    node = ros.node("param_client")
    client = node.create_client(SetParameters, "/policy_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    params = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    return client.call(SetParameters.Request(parameters=params), timeout_sec=10.0).results


class TrainedRatioPolicy(RampPolicy):
    trained_keep_ratio = 1.0  # e.g. a DeepVision checkpoint trained without AGVP (every patch)


def test_keep_ratio_zero_serves_the_ratio_the_checkpoint_was_trained_with(ros):
    """Catches policy_node's own default (0.5) overriding the checkpoint's ratio: a model trained on every expert
    patch was served half of them and failed every episode of the ablation (0/36)."""
    policy = TrainedRatioPolicy()
    start_policy_node(ros, policy, keep_ratio=0.0)
    assert policy.keep_ratio == 1.0
    [ok] = _set_params(ros, {"keep_ratio": 0.25})
    assert ok.successful and policy.keep_ratio == 0.25
    [back] = _set_params(ros, {"keep_ratio": 0.0})
    assert back.successful and policy.keep_ratio == 1.0
    [tiny] = _set_params(ros, {"keep_ratio": 0.01})
    assert not tiny.successful and "the checkpoint's own" in tiny.reason and policy.keep_ratio == 1.0


def test_parameter_change_applies_and_invalid_is_refused(ros):
    policy = RampPolicy()
    node = start_policy_node(ros, policy)
    [ok] = _set_params(ros, {"keep_ratio": 0.25})
    assert ok.successful
    assert policy.keep_ratio == 0.25 and node.get_parameter("keep_ratio").value == 0.25
    [bad] = _set_params(ros, {"keep_ratio": 2.0})
    assert not bad.successful and bad.reason
    [bad_choice] = _set_params(ros, {"new_goal_policy": "sometimes"})
    assert not bad_choice.successful and "sometimes" in bad_choice.reason
    assert policy.keep_ratio == 0.25 and node.get_parameter("keep_ratio").value == 0.25
    [static] = _set_params(ros, {"checkpoint_dir": "/elsewhere"})
    assert not static.successful
    # The applied value reaches the next chunk.
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")):
        result = client.result(client.send(max_chunks=1))
    assert result.outcome == Result.OUTCOME_COMPLETED
    wait_for(lambda: len(client.feedback) == 1, what="the chunk's feedback")  # not ordered with the result
    assert client.feedback[-1].kept_expert_tokens == 16


def test_second_goal_rejected_while_running(ros):
    start_policy_node(ros)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")):
        first = client.send()
        wait_for(lambda: len(client.chunks) >= 1, what="first goal running")
        second = client.send()
        assert not second.accepted
        first.cancel_goal_async()
        assert client.result(first).outcome == Result.OUTCOME_CANCELED


def test_second_goal_preempts_when_configured(ros):
    start_policy_node(ros, new_goal_policy="preempt")
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")):
        first = client.send()
        wait_for(lambda: len(client.chunks) >= 1, what="first goal running")
        second = client.send(max_chunks=2)
        assert second.accepted
        first_result = client.result(first)
        assert first_result.outcome == Result.OUTCOME_ABORTED and "preempted" in first_result.reason
        assert client.result(second).outcome == Result.OUTCOME_COMPLETED


def test_policy_exception_aborts_goal_and_node_serves_next(ros):
    policy = RampPolicy()
    start_policy_node(ros, policy)
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")):
        policy.fail_next.set()
        result = client.result(client.send(max_chunks=2))
        assert result.outcome == Result.OUTCOME_ABORTED and "planted failure" in result.reason
        result = client.result(client.send(max_chunks=2))
        assert result.outcome == Result.OUTCOME_COMPLETED and result.chunk_count == 2


def test_empty_instruction_is_rejected(ros):
    start_policy_node(ros)
    client = GoalClient(ros)
    assert not client.send(instruction="  ").accepted


@pytest.mark.parametrize("policy_kwargs,fragment", [
    ({"joint_names": tuple(reversed(DEFAULT_JOINTS))}, "joint names/order"),
    ({"cameras": ("front", "wrist")}, "image count"),
    ({"image_size_px": (224, 224)}, "image size"),
    ({"robot_type": "ur5e"}, "robot_type: policy trained on 'ur5e', config drives 'sim_arm'"),
])
def test_startup_refuses_mismatched_policy(ros, policy_kwargs, fragment):
    with pytest.raises(PolicyMismatchError, match=fragment):
        PolicyNode(policy=RampPolicy(**policy_kwargs), config=PolicyNodeConfig(), context=ros.context)


def test_robot_template_refuses_the_shipped_simulation_checkpoint(ros):
    """Bug: with use_sim:=false and no checkpoint_dir, policy_node loaded the sim arm's shipped
    checkpoint (same joint names as the robot.yaml template) and would have driven a real arm."""
    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "config" / "robot.yaml", "policy_node", PolicyNodeConfig)
    assert cfg.checkpoint_dir == ""
    shipped = read_contract(default_checkpoint_dir()).spec  # config.json only: this file runs without torch too
    policy = RampPolicy(robot_type=shipped.robot_type, image_size_px=shipped.image_size_px)
    with pytest.raises(PolicyMismatchError, match="policy trained on 'sim_arm', config drives 'my_arm' "
                                                  r"\(checkpoint_dir is empty"):
        PolicyNode(policy=policy, config=cfg, context=ros.context)


def test_goals_abort_and_are_rejected_while_safety_reports_the_estop_latched(ros):
    """Bug: a goal sent while the e-stop was latched ran to the end and reported SUCCEEDED with
    every chunk refused by safety_node."""
    start_policy_node(ros)
    client = GoalClient(ros)
    status_pub = client.node.create_publisher(DiagnosticArray, "/vla/safety/status", 10)

    def publish_status(latched: bool, armed: bool = False) -> None:
        values = {"armed": str(armed).lower(), "estop_latched": str(latched).lower(),
                  "last_reason": "e-stop pressed: holding until reset" if latched else ""}
        status_pub.publish(DiagnosticArray(status=[DiagnosticStatus(
            name="safety_node", values=[KeyValue(key=k, value=v) for k, v in values.items()])]))

    with SensorPublisher(ros.node("sensors")):
        publish_status(latched=False)  # a dry run (disarmed) is not an error
        running = client.send()
        wait_for(lambda: len(client.chunks) >= 2, what="goal running")
        publish_status(latched=True)
        result = client.result(running)
        assert result.outcome == Result.OUTCOME_ABORTED and "e-stop latched" in result.reason
        assert "/vla/safety/reset" in result.reason
        assert not client.send(max_chunks=1).accepted
        publish_status(latched=False)
        wait_for(lambda: client.send(max_chunks=1).accepted, what="goals accepted after the reset")


def test_aborted_goal_whose_episode_was_discarded_names_no_episode(ros, tmp_path):
    """Bug it catches: a goal aborted before any frame (the recorder discards an empty episode)
    still returned episode_id '0', an episode that does not exist."""
    from vla_ros.config.recorder import RecorderConfig
    from vla_ros.ros.recorder_node import RecorderNode

    ros.add(RecorderNode(RecorderConfig(dataset_root=str(tmp_path), min_free_disk_mb=0), context=ros.context))
    start_policy_node(ros, observation_wait_s=0.3)
    client = GoalClient(ros)
    result = client.result(client.send(record=True))  # no sensors: aborts waiting for an observation
    assert result.outcome == Result.OUTCOME_ABORTED and "no fresh observation" in result.reason
    assert "discarded" in result.reason and result.episode_id == "", result
