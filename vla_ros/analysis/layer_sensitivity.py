"""Layer-wise visual sensitivity (DeepVision-VLA §3.2, Fig. 2): how much each LLM layer still uses the image.

For every LLM layer l, the visual tokens of the task-relevant region (ROI) are zeroed in the hidden states
entering layer l (the VLA's visual tokens, and in coupled layers also the kept expert tokens of ROI patches);
the remaining layers run as usual and the predicted chunk is compared with the unmasked one (mean squared
change, normalised action units). As a control, the same number of background tokens is zeroed instead. A
layer whose ROI masking barely moves the actions no longer reads the task-relevant image region; the paper
finds this for the deep layers of the baselines, and couples its vision expert there.

    python -m vla_ros.analysis.layer_sensitivity --checkpoint DIR [--dataset DIR] [--frames N] [--output DIR]

Frames: from the simulator by default (pour and write layouts, seeds --seed0.., the scripted expert driven
part-way so the arm is mid-task), with the ROI from MuJoCo's segmentation of the task's objects and the hand.
With --dataset, frames of a recorded dataset; the ROI is then a box per episode (--roi-boxes JSON:
{"<episode_index>": [x0, y0, x1, y1] in pixels}) or, without boxes, the VLA tokens AGVP ranks highest
(--saliency-fraction of them; needs a checkpoint with the vision expert).
Writes layer_sensitivity.json and layer_sensitivity.png to --output. The expert's kept patches are fixed to
the unmasked pass's choice, so a curve shows masking alone, not a changed AGVP selection.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from vla_ros.errors import VlaRosError
from vla_ros.model.checkpoint import load_checkpoint
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import DeepVisionProcessor, ModelInputs
from vla_ros.paths import default_checkpoint_dir

log = logging.getLogger(__name__)
ROI_TOKEN_COVERAGE = 0.25  # a token (or expert patch) is in the ROI when >= this share of its pixels is


@dataclasses.dataclass
class ProbeFrame:
    images: np.ndarray  # (C, H, W, 3) uint8
    state: np.ndarray  # (S,) physical units
    instruction: str
    roi: np.ndarray  # (C, H, W) bool pixel mask, or (C, gh*gw) bool VLA-token mask when pixel_roi is False
    pixel_roi: bool = True


@dataclasses.dataclass
class SensitivityResult:
    layers: list[int]
    coupled_layers: list[int]
    roi_change: list[float]  # mean squared action change per layer, ROI masked
    background_change: list[float]  # same, the same number of background tokens masked
    roi_token_share: float  # mean share of VLA visual tokens in the ROI
    frames: int  # frames measured (a frame with no ROI or no background token is skipped)
    head: str
    uses_expert: bool


def sim_frames(count: int, seed0: int, tasks: Sequence[str], camera_names: Sequence[str],
               joint_names: Sequence[str]) -> list[ProbeFrame]:
    """Mid-task frames from the simulator with the scripted expert; ROI from its segmentation."""
    import vla_ros.sim  # noqa: F401  (sets the headless GL backend before mujoco loads)
    from vla_ros.config.sim import SimConfig
    from vla_ros.sim.arm_sim import ArmSim
    from vla_ros.sim.experts import make_expert

    frames = []
    rng = np.random.default_rng(seed0)
    for i in tqdm(range(count), desc="sim frames", file=sys.stdout):
        task = tasks[i % len(tasks)]
        sim = ArmSim(SimConfig(task=task))
        try:
            if tuple(joint_names) != tuple(sim.joint_names):
                raise VlaRosError(f"the checkpoint's joints {list(joint_names)} are not the sim's {list(sim.joint_names)}")
            state = sim.reset(seed=seed0 + i, task=task)
            expert = make_expert(sim.config, task)
            stop_s = rng.uniform(1.0, 8.0)  # somewhere between reaching and the task motion
            while sim.time_s < stop_s and not expert.is_done(state):
                sim.set_position_targets(expert.act(state))
                sim.step(0.05)
                state = sim.state()
            images = np.stack([sim.render(name) for name in camera_names])
            roi = np.stack([sim.task_region_mask(name) for name in camera_names])
            frames.append(ProbeFrame(images, sim.joint_positions(), state.task.instruction, roi))
        finally:
            sim.close()
    return frames


def dataset_frames(root: Path, count: int, camera_names: Sequence[str], roi_boxes: dict[int, list[float]] | None,
                   seed: int) -> list[ProbeFrame]:
    """`count` frames spread over a recorded dataset; ROI from a box per episode, else marked for saliency."""
    from vla_ros.recording.reader import LeRobotDatasetReader

    reader = LeRobotDatasetReader(root)
    keys = [f"observation.images.{name}" for name in camera_names]
    missing = [k for k in keys if k not in reader.camera_keys]
    if missing:
        raise VlaRosError(f"{root}: no camera {missing}; the dataset has {list(reader.camera_keys)}")
    picks = np.random.default_rng(seed).choice(len(reader), size=min(count, len(reader)), replace=False)
    frames = []
    for index in tqdm(sorted(int(i) for i in picks), desc="dataset frames", file=sys.stdout):
        frame = reader.get_frame(index)
        images = np.stack([frame[k] for k in keys])
        episode = reader.episode_of(index)
        if roi_boxes is not None:
            if str(episode) not in roi_boxes and episode not in roi_boxes:
                raise VlaRosError(f"--roi-boxes has no box for episode {episode}")
            x0, y0, x1, y1 = (int(round(v)) for v in roi_boxes.get(str(episode), roi_boxes.get(episode)))
            roi = np.zeros(images.shape[:3], dtype=bool)
            roi[:, max(y0, 0):y1, max(x0, 0):x1] = True
            frames.append(ProbeFrame(images, np.asarray(frame["observation.state"], np.float64), frame["task"], roi))
        else:
            frames.append(ProbeFrame(images, np.asarray(frame["observation.state"], np.float64), frame["task"],
                                     np.zeros((len(keys), 0), dtype=bool), pixel_roi=False))
    return frames


def _grid_mask(pixel_mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(C, H, W) bool -> (C, gh*gw) bool: cells whose pixel share in the mask is >= ROI_TOKEN_COVERAGE; on a
    camera where no cell reaches it (coarse grids, small objects), the cells with the largest share."""
    cells = np.stack([cv2.resize(m.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
                      for m in pixel_mask]).reshape(len(pixel_mask), -1)
    mask = cells >= ROI_TOKEN_COVERAGE
    for camera, share in enumerate(cells):
        if not mask[camera].any() and share.max() > 0:
            mask[camera] = share >= share.max()
    return mask


class _Masker:
    """layer_hook for DeepVisionVLA.forward: zero the chosen tokens entering one layer."""

    def __init__(self, layer: int, vla_positions: torch.Tensor, expert_rows: torch.Tensor | None) -> None:
        self.layer, self.vla_positions, self.expert_rows = layer, vla_positions, expert_rows

    def __call__(self, index: int, z: torch.Tensor, e: torch.Tensor | None):
        if index != self.layer:
            return z, e
        z = z.clone()
        z[0, self.vla_positions] = 0.0
        if e is not None and self.expert_rows is not None:
            e = e.clone()
            e[0, self.expert_rows] = 0.0
        return z, e


def _expert_rows(model: DeepVisionVLA, kept_index: torch.Tensor, patch_mask: np.ndarray) -> torch.Tensor:
    """Rows of the coupled expert sequence whose kept patch lies in `patch_mask` (C, P); prefix tokens skipped."""
    cameras, keep = kept_index.shape[1:]
    prefix = model.config.expert.num_prefix_tokens if model.config.coupling.keep_prefix_tokens else 0
    per_camera = prefix + keep
    rows = []
    for camera in range(cameras):
        in_mask = torch.from_numpy(patch_mask[camera])[kept_index[0, camera].cpu()]
        rows.append(camera * per_camera + prefix + torch.nonzero(in_mask).flatten())
    return torch.cat(rows)


def analyse(model: DeepVisionVLA, processor: DeepVisionProcessor, frames: Sequence[ProbeFrame],
            saliency_fraction: float = 0.25, seed: int = 0) -> SensitivityResult:
    config = model.config
    num_layers = config.vlm.text.num_layers
    coupled = list(config.coupled_llm_layers) if model.expert is not None else []
    grid = config.vlm.token_grid
    rng = np.random.default_rng(seed)
    roi_change = np.zeros(num_layers)
    background_change = np.zeros(num_layers)
    roi_share = []
    device = next(model.parameters()).device
    for frame in tqdm(frames, desc="layers x frames", file=sys.stdout):
        images = torch.from_numpy(frame.images[None]).to(device)
        state = torch.from_numpy(frame.state[None].astype(np.float32)).to(device)
        inputs: ModelInputs = processor(images, [frame.instruction], state)
        with torch.no_grad():
            base = model(inputs)
        kept = base.kept_patch_index
        if frame.pixel_roi:
            token_roi = _grid_mask(frame.roi, grid)
            patch_roi = _grid_mask(frame.roi, config.expert.patch_grid) if model.expert is not None else None
        else:  # no box: the VLA tokens AGVP ranks highest stand in for the ROI
            if base.saliency is None:
                raise VlaRosError("no ROI: give --roi-boxes (AGVP saliency needs a checkpoint with the vision expert)")
            flat = base.saliency[0].flatten(1).cpu().numpy()  # (C, gh*gw)
            top = max(1, int(round(saliency_fraction * flat.shape[1])))
            token_roi = np.zeros_like(flat, dtype=bool)
            np.put_along_axis(token_roi, np.argsort(-flat, axis=1)[:, :top], True, axis=1)
            patch_roi = _grid_mask(np.stack([cv2.resize(t.reshape(grid).astype(np.uint8),
                                                        config.expert.patch_grid[::-1],
                                                        interpolation=cv2.INTER_NEAREST).astype(bool)
                                             for t in token_roi]), config.expert.patch_grid)
        visual = inputs.visual_index.cpu()  # (C, Nv) sequence positions
        roi_positions = visual[torch.from_numpy(token_roi)]
        background = visual[torch.from_numpy(~token_roi)]
        count = min(len(roi_positions), len(background))
        if count == 0:
            log.warning("a frame with no ROI (or no background) token was skipped")
            continue
        roi_share.append(float(token_roi.mean()))
        background_positions = background[torch.from_numpy(rng.choice(len(background), count, replace=False))]
        roi_rows = background_rows = None
        if kept is not None:
            roi_rows = _expert_rows(model, kept, patch_roi)
            other = _expert_rows(model, kept, ~patch_roi)
            n_rows = min(len(roi_rows), len(other))
            background_rows = other[torch.from_numpy(rng.choice(len(other), n_rows, replace=False))] if n_rows else other[:0]
        for layer in range(num_layers):
            for positions, rows, totals in ((roi_positions, roi_rows, roi_change),
                                            (background_positions, background_rows, background_change)):
                hook = _Masker(layer, positions.to(device), None if rows is None else rows.to(device))
                with torch.no_grad():
                    out = model(inputs, kept_patch_index=kept, layer_hook=hook)
                totals[layer] += float(((out.actions - base.actions) ** 2).mean())
    used = max(1, len(roi_share))
    return SensitivityResult(layers=list(range(num_layers)), coupled_layers=coupled,
                             roi_change=(roi_change / used).tolist(),
                             background_change=(background_change / used).tolist(),
                             roi_token_share=float(np.mean(roi_share)) if roi_share else 0.0, frames=len(roi_share),
                             head=config.head.name, uses_expert=model.expert is not None)


def plot(results: dict[str, SensitivityResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4 + 0.25 * len(results)))
    for label, result in results.items():
        line, = ax.plot(result.layers, result.roi_change, marker="o", label=f"{label}: ROI masked")
        ax.plot(result.layers, result.background_change, linestyle="--", color=line.get_color(),
                label=f"{label}: background masked")
        if result.coupled_layers:
            ax.axvspan(result.coupled_layers[0] - 0.5, result.coupled_layers[-1] + 0.5, color=line.get_color(),
                       alpha=0.08)
    ax.set_xlabel("LLM layer whose input visual tokens are zeroed")
    ax.set_ylabel("mean squared action change (normalised)")
    ax.set_xticks(next(iter(results.values())).layers)
    values = [v for r in results.values() for v in (*r.roi_change, *r.background_change)]
    if values and min(values) > 0:  # changes span decades: deep layers are invisible on a linear axis
        ax.set_yscale("log")
    ax.set_title("Layer-wise visual sensitivity\n(shaded: layers coupled to the vision expert)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vla_ros.analysis.layer_sensitivity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=None,
                        help="checkpoint directory; repeat to compare (e.g. baseline vs DeepVision); "
                             "default: the shipped sim checkpoint")
    parser.add_argument("--label", action="append", default=None, help="a name per --checkpoint for the plot")
    parser.add_argument("--dataset", default="", help="recorded dataset to take frames from (default: the sim)")
    parser.add_argument("--roi-boxes", default="", help="JSON file {episode_index: [x0, y0, x1, y1]} (pixels)")
    parser.add_argument("--saliency-fraction", type=float, default=0.25,
                        help="without boxes: share of VLA tokens AGVP ranks highest that form the ROI")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tasks", nargs="+", default=["pour", "write"], help="sim tasks, alternating")
    parser.add_argument("--seed0", type=int, default=5000, help="first sim seed / frame sampling seed")
    parser.add_argument("--output", default="outputs/layer_sensitivity")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    checkpoints = args.checkpoint or [str(default_checkpoint_dir())]
    labels = args.label or [Path(c).name for c in checkpoints]
    if len(labels) != len(checkpoints):
        print("error: give one --label per --checkpoint", file=sys.stderr)
        return 2
    if args.frames < 1 or not 0.0 < args.saliency_fraction <= 1.0:
        print("error: --frames must be >= 1 and --saliency-fraction in (0, 1]", file=sys.stderr)
        return 2
    try:
        boxes = json.loads(Path(args.roi_boxes).read_text()) if args.roi_boxes else None
        results: dict[str, SensitivityResult] = {}
        probe_frames: dict[tuple, list[ProbeFrame]] = {}  # checkpoints of one robot interface share their frames
        for label, path in zip(labels, checkpoints):
            loaded = load_checkpoint(path)
            robot = loaded.model.config.robot
            key = (robot.camera_names, robot.joint_names)
            if key not in probe_frames:
                probe_frames[key] = (
                    dataset_frames(Path(args.dataset), args.frames, robot.camera_names, boxes, args.seed0)
                    if args.dataset else
                    sim_frames(args.frames, args.seed0, args.tasks, robot.camera_names, robot.joint_names))
            results[label] = analyse(loaded.model, loaded.processor, probe_frames[key], args.saliency_fraction,
                                     args.seed0)
    except (VlaRosError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "layer_sensitivity.json").write_text(json.dumps(
        {label: dataclasses.asdict(result) for label, result in results.items()}, indent=2) + "\n")
    plot(results, output / "layer_sensitivity.png")
    for label, result in results.items():
        print(f"{label} ({result.head}, expert {'on' if result.uses_expert else 'off'}, {result.frames} frames, "
              f"ROI {result.roi_token_share:.0%} of visual tokens)")
        for layer in result.layers:
            mark = " coupled" if layer in result.coupled_layers else ""
            print(f"  layer {layer:3d}{mark:8s} ROI {result.roi_change[layer]:.5f}  "
                  f"background {result.background_change[layer]:.5f}")
    print(f"wrote {output / 'layer_sensitivity.json'} and {output / 'layer_sensitivity.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
