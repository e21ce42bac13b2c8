"""DeepVisionPolicy: the vla_ros.types.Policy that policy_node runs (observation in, physical chunk out)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vla_ros.errors import ConfigError
from vla_ros.model.checkpoint import LoadedCheckpoint, load_checkpoint
from vla_ros.model.configuration import check_keep_ratio
from vla_ros.model.fast_inference import Signature, StaticInference, input_signature
from vla_ros.model.modeling_deepvision import DeepVisionOutput
from vla_ros.model.processing import ModelInputs
from vla_ros.types import Observation, PolicyOutput, PolicySpec

if TYPE_CHECKING:
    from vla_ros.model.onnx_policy import OnnxPolicy

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnxruntime")
MAX_STATIC_SHAPES = 8  # captured graphs kept (instruction bucket x K x batch); the oldest is dropped


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu. Asking for cuda without one is a ConfigError."""
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ConfigError(f"device={device!r}: must be one of {DEVICES} or 'cuda:<index>'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: CUDA is not available on this machine")
    return torch.device(device)


def build_policy(checkpoint_dir: str | Path, device: str = "auto", backend: str = "torch",
                 fast_inference: bool | None = None, keep_ratio: float | None = None) -> DeepVisionPolicy | OnnxPolicy:
    """The one place a serving policy is chosen: torch (eager or static/CUDA-graph forward) or ONNX Runtime.

    fast_inference applies to torch only. keep_ratio (default: the checkpoint's) is the K the ONNX Runtime
    backend prepares at start-up. Raises ConfigError/CheckpointError with the reason; never falls back.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"inference_backend={backend!r}: must be one of {BACKENDS}")
    if backend == "onnxruntime":
        from vla_ros.model.onnx_policy import OnnxPolicy  # onnxruntime is imported only when asked for

        return OnnxPolicy(checkpoint_dir, device=device, keep_ratio=keep_ratio)
    policy = DeepVisionPolicy.from_checkpoint(checkpoint_dir, device=device, fast_inference=fast_inference)
    if keep_ratio is not None:
        policy.set_keep_ratio(keep_ratio)
    return policy


class DeepVisionPolicy:
    """Runs a DeepVision-VLA checkpoint: bf16 on CUDA, fp32 on CPU, eval mode, no autograd.

    fast_inference (default: on for CUDA, off for CPU) serves each (batch, instruction bucket, K) through a
    StaticInference, i.e. a CUDA graph captured on the first call of that shape (a one-off cost of a few
    warm-up forwards); off runs the eager forward every call.
    """

    def __init__(self, loaded: LoadedCheckpoint, device: torch.device, fast_inference: bool | None = None) -> None:
        self.model = loaded.model
        self.processor = loaded.processor
        self.device = device
        self.fast_inference = device.type == "cuda" if fast_inference is None else fast_inference
        self._static: OrderedDict[tuple[Signature, int], StaticInference] = OrderedDict()
        self._static_lock = threading.Lock()  # one set of input buffers per shape: one caller at a time
        self._graph_pool = torch.cuda.graph_pool_handle() if self.fast_inference and device.type == "cuda" else None
        self._keep_ratio = self.model.config.pruning.keep_ratio
        robot = self.model.config.robot
        self._spec = robot.policy_spec()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", fast_inference: bool | None = None
                        ) -> DeepVisionPolicy:
        resolved = resolve_device(device)
        dtype = torch.bfloat16 if resolved.type == "cuda" else torch.float32
        loaded = load_checkpoint(path, device=resolved, dtype=dtype)
        log.info("loaded %s on %s (%s), %d parameters", path, resolved, dtype,
                 loaded.model.parameter_counts()["total"])
        return cls(loaded, resolved, fast_inference)

    backend = "torch"

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    @property
    def keep_ratio(self) -> float:
        return self._keep_ratio

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "device": str(self.device), "fast_inference": self.fast_inference}

    @property
    def trained_keep_ratio(self) -> float:
        """The checkpoint's own AGVP ratio (pruning.keep_ratio): what policy_node serves at keep_ratio 0."""
        return self.model.config.pruning.keep_ratio

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Validated (ConfigError outside (0, 1]); applies from the next predict. No effect on the baseline."""
        self._keep_ratio = check_keep_ratio(keep_ratio)

    def predict(self, obs: Observation) -> PolicyOutput:
        """One observation -> (H, A) float64 chunk in physical units (deltas for joint_delta)."""
        return self.predict_batch([obs])[0]

    def predict_batch(self, observations: Sequence[Observation]) -> list[PolicyOutput]:
        """Several observations in one forward pass; `info["inference_s"]` is the whole batch's time."""
        keep_ratio = self._keep_ratio  # one snapshot per call: a concurrent set_keep_ratio applies next time
        start_s = time.perf_counter()
        inputs = self.processor.observations_to_inputs(observations, self.device)
        preprocess_s = time.perf_counter() - start_s  # images -> tensors on the device (latency budget)
        with torch.inference_mode():
            out = self._forward(inputs, keep_ratio)
        chunks = self.processor.actions_to_physical(out.actions)  # (B, H, A) float64, synchronises the device
        inference_s = time.perf_counter() - start_s
        kept = self.model.kept_patches_per_camera(keep_ratio) * len(self._spec.camera_names)
        return [PolicyOutput(actions=chunk, kept_expert_tokens=kept,
                             info={"inference_s": inference_s, "preprocess_s": preprocess_s,
                                   "keep_ratio": keep_ratio})
                for chunk in chunks]

    def _forward(self, inputs: ModelInputs, keep_ratio: float) -> DeepVisionOutput:
        if not self.fast_inference:
            return self.model(inputs, keep_ratio=keep_ratio)
        key = (input_signature(inputs), self.model.kept_patches_per_camera(keep_ratio))
        with self._static_lock:
            static = self._static.get(key)
            if static is None:
                if len(self._static) >= MAX_STATIC_SHAPES:
                    self._static.popitem(last=False)
                log.info("first call with inputs %s and K=%d: preparing the static forward", dict(key[0]), key[1])
                try:
                    static = StaticInference(self.model, inputs, keep_ratio, graph_pool=self._graph_pool)
                except Exception:  # the CUDA graph path is not yet measured on a GPU: never let it stop a robot
                    log.exception("static/CUDA-graph forward failed to build; serving the eager forward from now on")
                    self.fast_inference = False
                    return self.model(inputs, keep_ratio=keep_ratio)
                self._static[key] = static
            self._static.move_to_end(key)
            return static(inputs)

    def kept_patch_indices(self, obs: Observation) -> np.ndarray:
        """(C, K) raster indices into each camera's expert patch grid (model.config.expert.patch_grid) that
        AGVP keeps for `obs` at the current keep ratio; (C, 0) for the baseline. For visualisation."""
        inputs = self.processor.observations_to_inputs([obs], self.device)
        with torch.inference_mode():
            out = self.model(inputs, keep_ratio=self._keep_ratio)
        if out.kept_patch_index is None:
            return np.zeros((len(self._spec.camera_names), 0), dtype=np.int64)
        return out.kept_patch_index[0].cpu().numpy()
