"""End-to-end tiny training on recorder-written data: learning, exact resume, checkpoints, CLI, bad episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test.training.tiny import FPS, IMAGE_HW, JOINTS, TASKS, image, tiny_train_config, trajectory
from vla_ros.errors import ConfigError
from vla_ros.model.checkpoint import load_checkpoint
from vla_ros.model.policy import DeepVisionPolicy
from vla_ros.training import run_state
from vla_ros.training.config import TrainConfig
from vla_ros.training.train import main
from vla_ros.training.trainer import Trainer, train
from vla_ros.types import Observation


def test_tiny_model_learns_on_recorded_data(recorded_dataset, tmp_path):
    config = tiny_train_config(recorded_dataset, tmp_path / "run", steps=60, log_every=5, save_every=30)
    result = train(config)
    losses = [e["loss"] for e in result.entries]
    assert [e["step"] for e in result.entries] == list(range(5, 61, 5))
    assert np.mean(losses[-2:]) < 0.6 * losses[0], losses
    logged = json.loads((tmp_path / "run/train_log.json").read_text())["entries"]
    assert [e["loss"] for e in logged] == losses
    assert set(logged[0]["lr"]) == {"vlm", "expert", "new", "head"}
    assert (tmp_path / "run/loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert TrainConfig.load_json(tmp_path / "run/train_config.json") == config
    assert result.final_checkpoint == tmp_path / "run/checkpoints/step_00000060"


def _tensors(path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.mark.parametrize("rocket", [False, True], ids=["l1", "l1+rocket"])
def test_resume_continues_exactly(recorded_dataset, tmp_path, rocket):
    settings = dict(steps=6, save_every=3, batch_size=4, grad_accum_steps=2, warmup_steps=2, rocket=rocket,
                    episodes_per_block=2, keep_last_checkpoints=0)
    uninterrupted = train(tiny_train_config(recorded_dataset, tmp_path / "full", **settings))

    stopped_config = tiny_train_config(recorded_dataset, tmp_path / "stopped", **{**settings, "save_every": 100})
    trainer = Trainer(stopped_config)
    try:
        stopped = trainer.run(until_step=4)  # stops between checkpoints: writes step 4 and ends
    finally:
        trainer.close()
    assert stopped.steps == 4 and stopped.final_checkpoint.name == "step_00000004"
    resumed = train(stopped_config, resume="latest")
    assert resumed.steps == 6

    full, again = _tensors(uninterrupted.final_checkpoint), _tensors(resumed.final_checkpoint)
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full), [k for k in full if not torch.equal(full[k], again[k])]
    state = run_state.STATE_DIR
    for name in (run_state.OPTIMIZER_FILE, *([run_state.ROCKET_FILE] if rocket else [])):
        a = run_state.load_torch(uninterrupted.final_checkpoint / state / name)
        b = run_state.load_torch(resumed.final_checkpoint / state / name)
        flat_a, flat_b = torch.utils._pytree.tree_flatten(a)[0], torch.utils._pytree.tree_flatten(b)[0]
        assert all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(flat_a, flat_b))
    assert [e["loss"] for e in resumed.entries] == [e["loss"] for e in uninterrupted.entries]
    assert ("align" in resumed.entries[-1]) == rocket
    # the parameters really moved: the test would not pass with a run that did nothing
    first = run_state.completed_checkpoints(tmp_path / "full")[0]
    assert not all(torch.equal(full[k], _tensors(first)[k]) for k in full)


def test_checkpoint_is_a_policy_for_the_recorded_robot(recorded_dataset, tmp_path):
    trainer = Trainer(tiny_train_config(recorded_dataset, tmp_path / "run", steps=2))
    try:
        result = trainer.run()
    finally:
        trainer.close()
    policy = DeepVisionPolicy.from_checkpoint(result.final_checkpoint, device="cpu")
    spec = policy.spec
    assert spec.joint_names == JOINTS and spec.action_names == JOINTS
    assert spec.action_space == "joint_position" and spec.horizon == 8 and spec.dt_s == pytest.approx(1.0 / FPS)
    assert spec.camera_names == ("front",) and tuple(spec.image_size_px) == IMAGE_HW
    positions = trajectory(0, 24)
    out = policy.predict(Observation(images=(image(positions[3], 3),), state=positions[3], instruction=TASKS[0],
                                     stamp_ns=0))
    assert out.actions.shape == (8, len(JOINTS)) and np.all(np.isfinite(out.actions))
    loaded = load_checkpoint(result.final_checkpoint)
    trained = trainer.objective.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in loaded.model.state_dict().items())
    np.testing.assert_array_equal(loaded.processor.norm_stats.action.q99, trainer.norm_stats.action.q99)
    assert loaded.model.config.robot.use_proprio


def test_cli_trains_resumes_and_refuses_changed_settings(recorded_dataset, tmp_path):
    output = tmp_path / "run"
    args = ["--dataset", str(recorded_dataset), "--output", str(output), "--model", "tiny", "--chunk-size", "4",
            "--steps", "2", "--batch-size", "4", "--seed", "3", "--save-every", "1", "--no-progress"]
    assert main(args) == 0
    assert sorted(p.name for p in run_state.completed_checkpoints(output)) == ["step_00000001", "step_00000002"]
    saved = TrainConfig.load_json(output / "train_config.json")
    assert (saved.batch_size, saved.seed, saved.chunk_size, saved.progress) == (4, 3, 4, False)
    assert main(args) == 1  # the run directory already holds checkpoints
    assert main([*args, "--resume", "--batch-size", "8"]) == 1  # not the same run any more
    assert main(["--output", str(output), "--resume", "--log-every", "1"]) == 0  # finished: nothing to redo


def test_training_skips_a_corrupt_episode(dataset_copy, tmp_path):
    (dataset_copy / "data/chunk-000/file-005.parquet").write_bytes(b"truncated")
    result = train(tiny_train_config(dataset_copy, tmp_path / "run", steps=2))
    assert [(s.episode_index, s.dataset) for s in result.skipped_episodes] == [(5, str(dataset_copy))]
    state = run_state.read_trainer_state(result.final_checkpoint)
    assert state["skipped_episodes"][0]["episode_index"] == 5


def test_resume_refuses_changed_data(dataset_copy, tmp_path):
    config = tiny_train_config(dataset_copy, tmp_path / "run", steps=4, save_every=2)
    trainer = Trainer(config)
    try:
        trainer.run(until_step=2)
    finally:
        trainer.close()
    (dataset_copy / "data/chunk-000/file-000.parquet").write_bytes(b"gone")
    with pytest.raises(ConfigError, match="datasets changed"):
        train(config, resume="latest")


def test_config_rules_name_the_field():
    with pytest.raises(ConfigError, match="model"):
        TrainConfig(model="tiny", init_checkpoint="/some/checkpoint")
    with pytest.raises(ConfigError, match="rocket_teacher_layers"):
        TrainConfig(rocket_vla_layers=(1, 2), rocket_teacher_layers=(1,))
    with pytest.raises(ConfigError, match="image_height_px"):
        TrainConfig(image_height_px=64)
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")
    with pytest.raises(ConfigError, match="datasets"):
        TrainConfig(output="/tmp/x", model="tiny").require_runnable()


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_bf16_training_writes_a_loadable_checkpoint(recorded_dataset, tmp_path, precision):
    """bf16-mixed: fp32 weights under bf16 autocast (the CUDA default; CPU autocast here); bf16: bf16 weights."""
    result = train(tiny_train_config(recorded_dataset, tmp_path / "run", steps=2, batch_size=4, precision=precision))
    assert all(np.isfinite(e["loss"]) for e in result.entries)
    stored = {t.dtype for t in _tensors(result.final_checkpoint).values()}
    assert stored == ({torch.float32} if precision == "bf16-mixed" else {torch.bfloat16})
    assert load_checkpoint(result.final_checkpoint).model.config.robot.joint_names == JOINTS


def test_init_checkpoint_keeps_its_weights_and_refits_the_head(recorded_dataset, tmp_path):
    from vla_ros.model.checkpoint import create_random_checkpoint
    from vla_ros.model.configuration import DeepVisionConfig, RobotConfig

    other_robot = RobotConfig(joint_names=("a", "b", "c"), action_names=("a", "b", "c"), state_dim=3,
                              camera_image_size_px=(32, 32))
    start = create_random_checkpoint(tmp_path / "start", DeepVisionConfig.tiny(robot=other_robot), seed=7)
    config = tiny_train_config(recorded_dataset, tmp_path / "run", model="", init_checkpoint=str(start), steps=2,
                               lr_vlm=0.0, lr_expert=0.0)  # frozen backbones: their weights must not move
    result = train(config)
    before, after = _tensors(start), _tensors(result.final_checkpoint)
    backbone = [k for k in after if k.startswith(("vlm.", "expert."))]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert after["action_head.mlp.2.weight"].shape[0] == len(JOINTS)  # re-initialised for the recorded robot
    assert not torch.equal(before["pairs.0.align_k.proj.weight"], after["pairs.0.align_k.proj.weight"])
    assert load_checkpoint(result.final_checkpoint).model.config.robot.joint_names == JOINTS


@pytest.mark.parametrize("head", ["vla_adapter", "vlm4vla"])
def test_cli_head_option_trains_a_policy_with_that_head(recorded_dataset, tmp_path, head):
    """--head reaches the model: the checkpoint's config names the head, its query tokens are saved, and
    DeepVisionPolicy (what policy_node loads) serves it."""
    output = tmp_path / "run"
    args = ["--dataset", str(recorded_dataset), "--output", str(output), "--model", "tiny", "--steps", "2",
            "--batch-size", "2", "--head", head, "--num-query-tokens", "3", "--log-every", "1"]
    assert main(args) == 0
    final = sorted((output / "checkpoints").iterdir())[-1]
    model = load_checkpoint(final).model
    assert model.config.head.name == head and model.config.head.num_query_tokens == 3
    assert tuple(model.action_head.queries.shape) == (3, model.config.vlm.text.hidden_size)
    policy = DeepVisionPolicy.from_checkpoint(final)
    positions = trajectory(0, 4)
    out = policy.predict(Observation(images=(image(positions[0], 0),), state=positions[0], instruction=TASKS[0],
                                     stamp_ns=1))
    assert out.actions.shape == (model.config.robot.chunk_size, len(JOINTS)) and np.isfinite(out.actions).all()


def test_num_query_tokens_with_the_oft_head_is_refused(recorded_dataset, tmp_path):
    config = tiny_train_config(recorded_dataset, tmp_path / "run", num_query_tokens=4)
    with pytest.raises(ConfigError, match="num_query_tokens"):
        train(config)
