"""StaticInference: DeepVisionVLA's forward at fixed shapes, replayed from one CUDA graph on CUDA.

Fixed per instance: batch size, instruction bucket (prompt length), cameras and K (the keep ratio). Inputs
are copied into buffers allocated once. On CUDA the whole step (both vision towers, the expert's shallow
layers on a second stream, shallow LLM layers, AGVP, coupled layers, head) is captured after a few warm-up
calls and replayed, which removes the per-kernel launch cost that dominates batch-1 eager PyTorch
(perf_anchors.md §3, §8). On CPU the same object runs the eager forward on its buffers, so its output is
exactly DeepVisionVLA.forward's (test/model/test_fast_inference.py).

The CUDA branch was written without a GPU and is not measured yet: bench/bench_gpu.py measures it and
checks it against the eager forward (bench/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from vla_ros.errors import ObservationError
from vla_ros.model.configuration import check_keep_ratio
from vla_ros.model.modeling_deepvision import DeepVisionOutput, DeepVisionVLA
from vla_ros.model.processing import ModelInputs

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, tuple[int, ...] | None], ...]


def input_signature(inputs: ModelInputs) -> Signature:
    """Shapes of every ModelInputs field (None for absent ones): equal signatures can share one graph."""
    return tuple((field.name, None if getattr(inputs, field.name) is None else tuple(getattr(inputs, field.name).shape))
                 for field in dataclasses.fields(inputs))


class StaticInference:
    """One model, one input signature, one K. Call it with ModelInputs; it returns a DeepVisionOutput."""

    def __init__(self, model: DeepVisionVLA, example: ModelInputs, keep_ratio: float | None = None, *,
                 cuda_graph: bool = True, expert_stream: bool = True, kept_patch_index: torch.Tensor | None = None,
                 warmup_calls: int = 3, graph_pool: tuple[int, int] | None = None) -> None:
        """example: inputs with the shapes to serve (its values only feed the warm-up). kept_patch_index: a fixed
        (B, C, K) expert selection instead of AGVP's (to measure AGVP's cost). graph_pool: a
        torch.cuda.graph_pool_handle() shared by graphs that never run at the same time."""
        self.model = model
        self.keep_ratio = model.keep_ratio if keep_ratio is None else check_keep_ratio(keep_ratio)
        self.signature = input_signature(example)
        self.device = example.input_ids.device
        with torch.inference_mode():
            self._inputs = dataclasses.replace(example, **{  # the static input buffers
                field.name: getattr(example, field.name).clone()
                for field in dataclasses.fields(example) if getattr(example, field.name) is not None})
            self._kept_index = None if kept_patch_index is None else kept_patch_index.to(self.device).clone()
        on_cuda = self.device.type == "cuda"
        self._expert_stream = (torch.cuda.Stream(self.device)
                               if on_cuda and expert_stream and model.expert is not None else None)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_output: DeepVisionOutput | None = None
        if on_cuda and cuda_graph:
            self._capture(warmup_calls, graph_pool)

    @property
    def uses_cuda_graph(self) -> bool:
        return self._graph is not None

    @property
    def uses_expert_stream(self) -> bool:
        return self._expert_stream is not None

    def __call__(self, inputs: ModelInputs) -> DeepVisionOutput:
        signature = input_signature(inputs)
        if signature != self.signature:
            raise ObservationError(f"inputs have shapes {dict(signature)}, but this StaticInference serves "
                                   f"{dict(self.signature)} (one instance per batch size and instruction bucket)")
        with torch.inference_mode():
            for field in dataclasses.fields(inputs):
                value = getattr(inputs, field.name)
                if value is not None:
                    getattr(self._inputs, field.name).copy_(value)
            if self._graph is None:
                return self._forward()
            self._graph.replay()
            # The graph's outputs are overwritten by the next replay: hand out copies (a few KB).
            out = self._graph_output
            return DeepVisionOutput(
                actions=out.actions.clone(), last_hidden_state=out.last_hidden_state.clone(),
                saliency=None if out.saliency is None else out.saliency.clone(),
                kept_patch_index=None if out.kept_patch_index is None else out.kept_patch_index.clone())

    def _forward(self) -> DeepVisionOutput:
        return self.model(self._inputs, keep_ratio=self.keep_ratio, kept_patch_index=self._kept_index,
                          expert_stream=self._expert_stream)

    def _capture(self, warmup_calls: int, graph_pool: tuple[int, int] | None) -> None:
        """Warm up on a side stream (fills lazy caches, picks kernels), then capture one forward."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(warmup_calls):
                self._forward()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=graph_pool):
            self._graph_output = self._forward()
        self._graph = graph
        log.info("captured a CUDA graph for %s, keep_ratio %.3f", dict(self.signature), self.keep_ratio)
