"""The ablation's variants: each differs from DeepVision-VLA in exactly the mechanism its row names.

A variant whose config silently equals another's would make its row a rerun of that one (e.g. "no AGVP" still
pruning, "shallow" still coupled deep, a head variant still carrying the expert), so each is checked against the
DeepVision variant field by field, built and run once; the ROCKET teacher is read back the way the trainer
reads it.
"""

from __future__ import annotations

import pytest
import torch

from test.model.tiny import make_inputs, make_processor
from vla_ros.apps import ablation
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig, RobotConfig
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.training.rocket import load_teacher


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    base = root / "base.json"
    DeepVisionConfig.tiny(robot=RobotConfig(use_proprio=True)).save_json(base)
    args = ablation._args(["--dataset", str(root / "unused"), "--output", str(root / "out"),
                           "--base-model", str(base)])
    return {name: DeepVisionConfig.load_json(path) for name, path in ablation.write_variant_configs(args).items()}


def _differences(a: DeepVisionConfig, b: DeepVisionConfig) -> set[str]:
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    return {key for key in flat_a.keys() | flat_b.keys() if flat_a.get(key) != flat_b.get(key)}


def _flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_each_variant_changes_only_its_own_mechanism(configs):
    deepvision = configs["deepvision"]
    assert deepvision.uses_agvp and deepvision.pruning.keep_ratio < 1.0
    assert _differences(deepvision, configs["deepvision_no_agvp"]) == {"pruning.keep_ratio"}
    assert configs["deepvision_no_agvp"].pruning.keep_ratio == 1.0
    assert _differences(deepvision, configs["deepvision_shallow"]) == {"pruning.keep_ratio", "coupling.llm_layers"}
    assert list(configs["deepvision_shallow"].coupled_llm_layers) == [0, 1]
    assert list(deepvision.coupled_llm_layers) == [2, 3]
    assert configs["deepvision_rocket"] == deepvision  # ROCKET is a training loss: same architecture
    baseline = configs["qwenvla_oft"]
    assert baseline.expert is None and baseline.coupling.num_layers == 0 and baseline.head.name == "oft_mlp"
    for head in ("vla_adapter", "vlm4vla"):
        assert _differences(baseline, configs[head]) == {"head.name"}
        assert configs[head].head.name == head


def test_every_variant_builds_and_runs(configs):
    for name, config in configs.items():
        torch.manual_seed(0)
        model = DeepVisionVLA(config).eval()
        with torch.no_grad():
            out = model(make_inputs(make_processor(config)))
        assert out.actions.shape == (2, config.robot.chunk_size, config.robot.action_dim), name
        assert (out.kept_patch_index is None) == (config.expert is None), name


def test_only_the_rocket_variant_trains_with_the_teacher_the_trainer_can_read(configs, tmp_path):
    args = ablation._args(["--dataset", "d1", "--dataset", "d2", "--output", str(tmp_path)])
    teacher = ablation.export_teacher(args.rocket_teacher, tmp_path / "teacher")
    loaded, teacher_config = load_teacher(str(teacher), DeepVisionConfig.load_json(
        args.rocket_teacher / "config.json"), torch.float32)
    assert teacher_config.num_layers == len(backbones.expert_layers(loaded))
    for name in ablation.BY_NAME:
        command = ablation.train_command(args, name, tmp_path / f"{name}.json", teacher)
        assert ("--rocket" in command) == (name == "deepvision_rocket")
        assert command.count("--dataset") == 2 and "--success-only" in command
        assert command[command.index("--steps") + 1] == str(args.steps)
    rocket = ablation.train_command(args, "deepvision_rocket", tmp_path / "x.json", teacher)
    assert rocket[rocket.index("--rocket-teacher-dir") + 1] == str(teacher)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        ablation._args(["--dataset", "d", "--output", str(tmp_path), "--episodes", "0"])
    with pytest.raises(SystemExit):
        ablation._args(["--dataset", "d", "--output", str(tmp_path), "--variants", "no_such_variant"])


def test_success_intervals_are_wilson_scores():
    """Catches a normal-approximation interval (zero width at 0/20 and 20/20, the rows that need one most)."""
    assert ablation.wilson_interval(10, 20) == pytest.approx((0.2993, 0.7007), abs=1e-4)
    assert ablation.wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert ablation.wilson_interval(20, 20) == pytest.approx((0.8389, 1.0), abs=1e-4)
