"""ONNX export of the DeepVision-VLA parts that export cleanly, run with ONNX Runtime (an option only).

Parts, each at the config's fixed image size (static shapes):
  expert_shallow: DINOv3 embeddings + the expert layers before the coupled block,
                  (B*C, 3, He, We) normalised pixels -> (B*C, prefix + P, C_e)
  vla_vision:     Qwen3-VL vision tower (backbones.qwen_vision_forward, grid tables baked in),
                  (B*C*Pq, 3*T*p*p) Qwen patches -> merged tokens (B*C*Nv, C) and one DeepStack feature each
The LLM and coupled layers are not exported: their masks, MRoPE tables and AGVP gather would need the same
static treatment first. Export uses the TorchScript exporter (dynamo=False), which needs no onnxscript.
The policy never uses these; bench/bench_gpu.py times them against torch.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import ModelInputs

PARTS = ("expert_shallow", "vla_vision")
OPSET = 17  # LayerNormalization is native from 17
INPUT_NAME = "pixels"
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}


class ExpertShallow(nn.Module):
    """The expert's uncoupled half as a module of its own (shares the expert's weights, not the VLM's)."""

    def __init__(self, model: DeepVisionVLA) -> None:
        super().__init__()
        if model.expert is None:
            raise ConfigError("onnx part 'expert_shallow': the model is the baseline (expert=None)")
        self.expert = model.expert
        self.num_layers = len(backbones.expert_layers(model.expert)) - model.config.coupling.num_layers

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return backbones.dinov3_shallow_forward(self.expert, pixels, self.num_layers)  # (B*C, prefix + P, C_e)


class VisionTower(nn.Module):
    """The Qwen3-VL vision tower at the config's image size (shares the model's weights)."""

    def __init__(self, model: DeepVisionVLA, device: torch.device) -> None:
        super().__init__()
        self.visual = model.vlm.visual
        grid_h, grid_w = model.config.vlm.token_grid
        merge = model.config.vlm.vision.spatial_merge_size
        self.grid = backbones.qwen_vision_grid(self.visual, grid_h * merge, grid_w * merge, device)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, deepstack = backbones.qwen_vision_forward(self.visual, pixels, self.grid)
        return (pooled, *deepstack)


def part_module(model: DeepVisionVLA, part: str, dtype: torch.dtype | None = None) -> nn.Module:
    """The part as an eval-mode module; with `dtype`, a converted copy (the model itself is left alone)."""
    device = next(model.parameters()).device
    if part == "expert_shallow":
        module: nn.Module = ExpertShallow(model)
    elif part == "vla_vision":
        module = VisionTower(model, device)
    else:
        raise ConfigError(f"onnx part {part!r}: must be one of {PARTS}")
    if dtype is not None:
        module = copy.deepcopy(module).to(dtype)
    return module.eval()


def part_input(inputs: ModelInputs, part: str) -> torch.Tensor:
    """The tensor of `inputs` that the part reads."""
    if part == "expert_shallow":
        if inputs.expert_pixels is None:
            raise ConfigError("onnx part 'expert_shallow': the inputs have no expert_pixels (baseline model)")
        return inputs.expert_pixels
    if part == "vla_vision":
        return inputs.vla_pixels
    raise ConfigError(f"onnx part {part!r}: must be one of {PARTS}")


def export_part(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Trace `module` at the example's shape into an ONNX file; outputs are named output_0, output_1, ..."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        outputs = module(example)
    count = len(outputs) if isinstance(outputs, tuple) else 1
    with torch.no_grad(), warnings.catch_warnings():
        # Expected: shapes are traced as constants (static by design), and the TorchScript exporter is deprecated.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[f"output_{i}" for i in range(count)])
    return path


def session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
            threads: int | None = None) -> ort.InferenceSession:
    """An ORT session on the first available of `providers` (ConfigError if none of them is installed)."""
    usable = [p for p in providers if p in ort.get_available_providers()]
    if not usable:
        raise ConfigError(f"onnx providers={list(providers)}: none available; ONNX Runtime offers "
                          f"{ort.get_available_providers()}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=usable)


def run_session(sess: ort.InferenceSession, pixels: torch.Tensor) -> list[np.ndarray]:
    """Host-memory run: pixels (any device) -> numpy outputs."""
    array = pixels.detach().cpu().numpy().astype(_NUMPY_DTYPES[pixels.dtype], copy=False)
    return sess.run(None, {INPUT_NAME: array})


class DeviceRunner:
    """Runs a CUDA-provider session on a torch CUDA tensor without host copies (I/O binding).

    Unmeasured here (no GPU when written): bench_gpu.py uses it where the CUDA provider exists.
    """

    def __init__(self, sess: ort.InferenceSession, pixels: torch.Tensor) -> None:
        self.sess = sess
        self.pixels = pixels.contiguous()
        self.binding = sess.io_binding()
        device_id = pixels.device.index or 0
        self.binding.bind_input(INPUT_NAME, "cuda", device_id, _NUMPY_DTYPES[pixels.dtype], tuple(self.pixels.shape),
                                self.pixels.data_ptr())
        for output in sess.get_outputs():
            self.binding.bind_output(output.name, "cuda", device_id)

    def __call__(self) -> None:
        self.binding.synchronize_inputs()
        self.sess.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()

    def outputs(self) -> list[np.ndarray]:
        return self.binding.copy_outputs_to_cpu()


@dataclasses.dataclass(frozen=True)
class Agreement:
    max_abs_error: float  # over all outputs
    max_rel_error: float  # max |onnx - torch| / max |torch|, worst output

    def within(self, rel_tolerance: float) -> bool:
        return self.max_rel_error <= rel_tolerance


def agreement(reference: torch.Tensor | Sequence[torch.Tensor], onnx_outputs: Sequence[np.ndarray]) -> Agreement:
    """Compare torch outputs with ONNX Runtime's, output by output (shapes must match)."""
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    if len(references) != len(onnx_outputs):
        raise ConfigError(f"onnx outputs: got {len(onnx_outputs)}, torch gave {len(references)}")
    abs_errors, rel_errors = [], []
    for ref, out in zip(references, onnx_outputs):
        ref_np = ref.detach().float().cpu().numpy()
        if ref_np.shape != out.shape:
            raise ConfigError(f"onnx output shape {out.shape} != torch {ref_np.shape}")
        error = float(np.abs(out.astype(np.float32) - ref_np).max())
        abs_errors.append(error)
        rel_errors.append(error / max(float(np.abs(ref_np).max()), 1e-12))
    return Agreement(max(abs_errors), max(rel_errors))
