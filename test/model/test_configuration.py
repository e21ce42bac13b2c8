"""DeepVisionConfig: presets, JSON round trip, and every rule naming its field."""

from __future__ import annotations

import dataclasses

import pytest

from vla_ros.errors import ConfigError
from vla_ros.model.configuration import (CouplingConfig, DeepVisionConfig, PromptConfig, PruningConfig,
                                         QwenTextConfig, RobotConfig)
from vla_ros.model.pruning import kept_patch_count


@pytest.mark.parametrize("config", [DeepVisionConfig.tiny(), DeepVisionConfig.tiny(baseline=True),
                                    DeepVisionConfig.paper("/models/qwen", "/models/dino")])
def test_json_round_trip(tmp_path, config):
    config.save_json(tmp_path / "config.json")
    assert DeepVisionConfig.load_json(tmp_path / "config.json") == config


def test_paper_preset_has_the_documented_sizes():
    config = DeepVisionConfig.paper()
    assert (config.vlm.text.num_layers, config.vlm.text.hidden_size, config.vlm.text.num_kv_heads) == (36, 2560, 8)
    assert config.vlm.token_grid == (8, 8)  # 256 px / (16 px * 2x2 merge): 64 VLA visual tokens
    assert config.expert.patch_grid == (32, 32)  # 512 px / 16 px: 1024 expert patches
    assert (config.expert.hidden_size, config.expert.num_layers) == (1280, 32)
    assert config.coupling.num_layers == 16
    assert config.pruning.saliency_layers == tuple(range(4, 20))
    assert kept_patch_count(config.pruning.keep_ratio, 1024) == 512
    assert config.robot.camera_image_size_px == (240, 320) and config.robot.chunk_size == 16


def test_default_robot_interface():
    robot = DeepVisionConfig.tiny().robot
    assert robot.joint_names == robot.action_names == (*(f"joint_{i}" for i in range(1, 7)), "gripper")
    assert (robot.action_space, robot.dt_s, robot.camera_names) == ("joint_position", 0.1, ("front",))


@pytest.mark.parametrize("build, field", [
    (lambda: PruningConfig(keep_ratio=0.0), "pruning.keep_ratio"),
    (lambda: PruningConfig(saliency_layers=(3, 2)), "pruning.saliency_layers"),
    (lambda: dataclasses.replace(DeepVisionConfig.tiny(), pruning=PruningConfig(saliency_layers=(2,))),
     "pruning.saliency_layers"),
    (lambda: dataclasses.replace(DeepVisionConfig.tiny(), expert=None), "coupling.num_layers"),
    (lambda: CouplingConfig(expert_positions="learned"), "coupling.expert_positions"),
    (lambda: RobotConfig(state_dim=3), "robot.state_dim"),
    (lambda: RobotConfig(action_space="ee_pose"), "robot.action_space"),
    (lambda: RobotConfig(camera_names=("a", "a")), "robot.camera_names"),
    (lambda: RobotConfig(dt_s=0.0), "robot.dt_s"),
    (lambda: PromptConfig(template="{instruction} {images}"), "prompt.template"),
    (lambda: QwenTextConfig(mrope_section=(4, 4, 4)), "vlm.text.mrope_section"),
    (lambda: DeepVisionConfig.from_dict({"robot": {"chunk_sise": 8}}), "robot.chunk_sise"),
])
def test_invalid_values_raise_config_error_naming_the_field(build, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build()


def test_vla_image_size_must_fit_the_patch_merge_grid():
    with pytest.raises(ConfigError, match=r"vlm\.image_size_px=\(250, 256\).*divisible by 32"):
        dataclasses.replace(DeepVisionConfig.tiny().vlm, image_size_px=(250, 256))
