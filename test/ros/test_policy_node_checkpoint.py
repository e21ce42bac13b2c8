"""policy_node loads a checkpoint written by vla_ros.training unchanged and serves chunks over real DDS."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String

from test.conftest import wait_for
from test.ros.sensors import SensorPublisher
from test.ros.test_policy_node import GoalClient
from test.training.tiny import FPS, IMAGE_HW, JOINTS, ROBOT_TYPE, tiny_train_config, write_dataset
from vla_ros.config.policy import PolicyNodeConfig
from vla_ros.errors import ConfigError, PolicyMismatchError
from vla_ros.model.onnx_export import CACHE_ENV, GPU_PROVIDERS
from vla_ros.ros.policy_node import POLICY_INFO_TOPIC, PolicyNode
from vla_ros.training.trainer import train
from vla_ros_interfaces.action import RunPolicy


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    dataset = write_dataset(root / "dataset", episodes=2, frames=12)
    return train(tiny_train_config(dataset, root / "run", steps=2, batch_size=4)).final_checkpoint


# on: the static forward, here without CUDA graphs; onnxruntime: the whole step exported beside the checkpoint
@pytest.mark.parametrize("fast_inference,backend", [("auto", "torch"), ("on", "torch"), ("auto", "onnxruntime")])
def test_policy_node_runs_a_trained_checkpoint(ros, trained_checkpoint, fast_inference, backend, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    config = PolicyNodeConfig(checkpoint_dir=str(trained_checkpoint), robot_type=ROBOT_TYPE, device="cpu",
                              image_height_px=IMAGE_HW[0],
                              image_width_px=IMAGE_HW[1], observation_wait_s=2.0, replan_period_s=0.05,
                              fast_inference=fast_inference, inference_backend=backend)
    infos = []
    ros.node("info").create_subscription(String, POLICY_INFO_TOPIC, lambda m: infos.append(json.loads(m.data)),
                                         QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    node = ros.add(PolicyNode(config=config, context=ros.context))
    assert node._policy.backend == backend
    if backend == "torch":
        assert node._policy.fast_inference is (fast_inference == "on")
    wait_for(lambda: bool(infos), what="the latched /vla/policy/info")
    assert infos[0]["backend"] == backend and infos[0]["ready_s"] > 0
    if backend == "onnxruntime":
        assert infos[0]["provider"] == "CPUExecutionProvider"
        assert (trained_checkpoint / "onnx").is_dir()  # a writable checkpoint keeps its exports beside it
    client = GoalClient(ros)
    with SensorPublisher(ros.node("sensors")):  # 240x320 frames: the node resizes them to the checkpoint's size
        result = client.result(client.send(instruction="pick up the red cube", max_chunks=2))
    assert result.outcome == RunPolicy.Result.OUTCOME_COMPLETED, result.reason
    wait_for(lambda: len(client.chunks) == 2, what="2 chunks on /vla/action_chunk")
    for chunk in client.chunks:
        assert list(chunk.names) == list(JOINTS) and chunk.action_space == "joint_position"
        assert chunk.horizon == 8 and chunk.dt == pytest.approx(1.0 / FPS)
        actions = np.asarray(chunk.actions).reshape(8, len(JOINTS))
        assert np.all(np.isfinite(actions))
    wait_for(lambda: len(client.feedback) == 2, what="2 feedback messages")  # not ordered with the result
    assert client.feedback[0].kept_expert_tokens == 32  # tiny expert: 8x8 patches, keep ratio 0.5
    if backend == "torch":
        assert node._policy.fast_inference is (fast_inference == "on")  # the static forward built and served


def test_policy_node_refuses_a_checkpoint_trained_on_another_robot(ros, trained_checkpoint):
    """The checkpoint carries its dataset's robot_type; a node configured for another robot refuses it."""
    config = PolicyNodeConfig(checkpoint_dir=str(trained_checkpoint), device="cpu", image_height_px=IMAGE_HW[0],
                              image_width_px=IMAGE_HW[1])
    with pytest.raises(PolicyMismatchError, match=f"policy trained on '{ROBOT_TYPE}', config drives 'sim_arm'"):
        PolicyNode(config=config, context=ros.context)


def test_policy_node_refuses_to_start_when_the_onnx_session_cannot_be_built(ros, trained_checkpoint):
    """inference_backend=onnxruntime on a GPU device without a GPU build of onnxruntime: the node must not
    start (and must not quietly run on the CPU or on torch); the error names the reason."""
    if set(GPU_PROVIDERS) & set(onnxruntime.get_available_providers()):
        pytest.skip("this onnxruntime has a GPU provider")
    config = PolicyNodeConfig(checkpoint_dir=str(trained_checkpoint), robot_type=ROBOT_TYPE, device="cuda",
                              image_height_px=IMAGE_HW[0],
                              image_width_px=IMAGE_HW[1], inference_backend="onnxruntime")
    with pytest.raises(ConfigError, match="neither TensorRT nor CUDA"):
        PolicyNode(config=config, context=ros.context)
