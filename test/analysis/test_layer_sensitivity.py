"""The layer-wise visual sensitivity tool (DV §3.2) on tiny checkpoints: sim frames with segmentation ROIs,
dataset frames with boxes or the AGVP fallback, baseline and DeepVision, every head."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from test.training.tiny import IMAGE_HW, JOINTS, write_dataset
from vla_ros.analysis import layer_sensitivity as ls
from vla_ros.config.sim import SimConfig
from vla_ros.model.checkpoint import create_random_checkpoint, load_checkpoint
from vla_ros.model.configuration import DeepVisionConfig, HeadConfig, RobotConfig


def _checkpoint(path, baseline=False, head="oft_mlp", image_hw=(240, 320), joints=None):
    joints = joints or SimConfig().joint_names
    robot = RobotConfig(joint_names=joints, action_names=joints, state_dim=len(joints), camera_image_size_px=image_hw)
    config = dataclasses.replace(DeepVisionConfig.tiny(baseline=baseline, robot=robot),
                                 head=HeadConfig(name=head, num_query_tokens=0 if head == "oft_mlp" else 4,
                                                 bridge_num_heads=4))
    return create_random_checkpoint(path, config, seed=3)


def test_masker_zeros_only_the_chosen_tokens_at_the_chosen_layer():
    """Bug killed: masking applied at every layer (or at none): the hook edits exactly one layer's input."""
    z = torch.ones(1, 6, 4)
    e = torch.ones(1, 5, 3)
    masker = ls._Masker(2, torch.tensor([1, 3]), torch.tensor([0, 4]))
    assert masker(1, z, e) == (z, e)
    z2, e2 = masker(2, z, e)
    assert z2[0, [1, 3]].abs().sum() == 0 and z2[0, [0, 2, 4, 5]].eq(1).all()
    assert e2[0, [0, 4]].abs().sum() == 0 and e2[0, 1:4].eq(1).all()
    assert z.eq(1).all() and e.eq(1).all()  # the caller's tensors are untouched


def test_expert_rows_follow_the_kept_patch_order(tmp_path):
    """Bug killed: expert ROI rows taken as patch indices instead of positions in the kept sequence."""
    model = load_checkpoint(_checkpoint(tmp_path / "ckpt")).model
    kept = torch.tensor([[[5, 0, 9, 2]]])  # one camera, K = 4, raster patch indices
    patch_mask = np.zeros((1, 64), dtype=bool)
    patch_mask[0, [9, 2]] = True
    assert ls._expert_rows(model, kept, patch_mask).tolist() == [2, 3]


def test_grid_mask_marks_covered_cells_and_falls_back_to_the_largest_share():
    mask = np.zeros((1, 8, 8), dtype=bool)
    mask[0, :4, :4] = True  # the top-left quarter
    assert ls._grid_mask(mask, (2, 2)).tolist() == [[True, False, False, False]]
    small = np.zeros((1, 8, 8), dtype=bool)
    small[0, 7, 7] = True  # 1/16 of one cell: below the coverage rule, still the ROI's only cell
    assert ls._grid_mask(small, (2, 2)).tolist() == [[False, False, False, True]]


@pytest.mark.parametrize("baseline, head", [(False, "oft_mlp"), (True, "oft_mlp"), (False, "vla_adapter"),
                                            (True, "vlm4vla")])
def test_cli_on_sim_frames_writes_a_curve_per_layer(tmp_path, baseline, head):
    """Bug killed: the ROI never reaching the model (masks ignored): zeroing the ROI's visual tokens at the
    first layer must move a random model's actions; every layer gets a value; coupled layers are named."""
    ckpt = _checkpoint(tmp_path / "ckpt", baseline=baseline, head=head)
    out = tmp_path / "out"
    assert ls.main(["--checkpoint", str(ckpt), "--label", "tiny", "--frames", "2", "--output", str(out)]) == 0
    result = json.loads((out / "layer_sensitivity.json").read_text())["tiny"]
    layers = DeepVisionConfig.tiny().vlm.text.num_layers
    assert result["layers"] == list(range(layers)) and result["frames"] == 2 and result["head"] == head
    assert result["coupled_layers"] == ([] if baseline else [2, 3])
    assert all(np.isfinite(result["roi_change"])) and all(np.isfinite(result["background_change"]))
    assert result["roi_change"][0] > 0 and 0 < result["roi_token_share"] < 1
    assert (out / "layer_sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataset_frames_with_boxes_and_with_the_agvp_fallback(tmp_path):
    dataset = write_dataset(tmp_path / "dataset", episodes=2, frames=6)
    ckpt = _checkpoint(tmp_path / "ckpt", image_hw=IMAGE_HW, joints=JOINTS)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0": [0, 0, 32, 32], "1": [32, 32, 64, 64]}))
    for extra in (["--roi-boxes", str(boxes)], []):
        out = tmp_path / f"out{len(extra)}"
        assert ls.main(["--checkpoint", str(ckpt), "--dataset", str(dataset), "--frames", "3",
                        "--output", str(out), *extra]) == 0
        result = json.loads((out / "layer_sensitivity.json").read_text())["ckpt"]
        assert result["frames"] == 3 and result["roi_change"][0] > 0


def test_refusals_name_the_problem(tmp_path, capsys):
    dataset = write_dataset(tmp_path / "dataset", episodes=2, frames=4)
    baseline = _checkpoint(tmp_path / "base", baseline=True, image_hw=IMAGE_HW, joints=JOINTS)
    assert ls.main(["--checkpoint", str(baseline), "--dataset", str(dataset), "--frames", "1",
                    "--output", str(tmp_path / "o")]) == 1
    assert "--roi-boxes" in capsys.readouterr().err
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0": [0, 0, 8, 8]}))
    assert ls.main(["--checkpoint", str(baseline), "--dataset", str(dataset), "--frames", "8",
                    "--roi-boxes", str(boxes), "--output", str(tmp_path / "o")]) == 1
    assert "no box for episode 1" in capsys.readouterr().err
    other = _checkpoint(tmp_path / "other", joints=("a", "b", "c"))
    assert ls.main(["--checkpoint", str(other), "--frames", "1", "--output", str(tmp_path / "o")]) == 1
    assert "not the sim's" in capsys.readouterr().err
