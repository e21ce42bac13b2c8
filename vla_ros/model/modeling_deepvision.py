"""DeepVision-VLA: QwenVLA-OFT plus a DINOv3 vision expert coupled into the deep LLM layers, with AGVP.

forward() follows deepvision_vla.md §5.5 steps 1-6 (step 2 is issued first: it does not depend on step 1,
and on a second CUDA stream it then overlaps steps 1 and 3). The QwenVLA-OFT baseline is the same class with
`config.expert = None` (no coupled layers, no pruning). Shapes are static given the config, the instruction
bucket and the keep ratio; no step loops over tokens and no step reads a device value on the host, so the
whole forward can be captured in one CUDA graph (fast_inference.StaticInference).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any, ContextManager

import torch
from torch import nn
from transformers import DINOv3ViTModel, Qwen3VLModel

from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.configuration import DeepVisionConfig, check_keep_ratio
from vla_ros.model.coupled_attention import CoupledLayerPair, Rope, decoder_layer_forward
from vla_ros.model.heads import HeadInputs, build_head
from vla_ros.model.masks import TokenKind, attention_mask, coupled_kinds, vla_kinds
from vla_ros.model.processing import ModelInputs
from vla_ros.model.pruning import action_to_vision_saliency, kept_patches_per_camera, select_expert_patches

# Stages of forward(), in execution order, as torch.profiler ranges named STAGE_PREFIX + stage (bench/bench_gpu.py
# reads them). prepare: embeddings, masks, MRoPE ids and RoPE tables; agvp: saliency rows, top-K, gathering the
# kept expert tokens and the coupled mask. With an expert_stream the CPU range of expert_shallow covers only its
# launch, so time stages with expert_stream=None.
STAGES = ("expert_shallow", "vla_vision", "prepare", "llm_shallow", "agvp", "coupled", "head")
STAGE_PREFIX = "deepvision."
# Runs one transformer layer step: layer_call(fn, *args) must return fn(*args). Training sets one to checkpoint
# activations per layer (vla_ros.training.strategy) or to measure them (vla_ros.training.plan).
LayerCall = Callable[..., Any]
# (LLM layer index, VLA hidden states (B, N, C), expert tokens (B, M, C_e) or None) -> the same, possibly edited
LayerHook = Callable[[int, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]


def _stage(name: str) -> ContextManager[None]:
    """A profiler range around one stage while a torch.profiler is recording; nothing otherwise (and never
    inside an ONNX export or a trace, whose graphs must not carry profiler ops)."""
    if not torch.autograd._profiler_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return contextlib.nullcontext()
    return torch.profiler.record_function(STAGE_PREFIX + name)


@dataclasses.dataclass
class DeepVisionOutput:
    actions: torch.Tensor  # (B, H, A) normalised units
    last_hidden_state: torch.Tensor  # (B, N, C) VLA tokens after the final norm
    loss: torch.Tensor | None = None  # mean L1 against target_actions
    saliency: torch.Tensor | None = None  # (B, C_cam, gh, gw) AGVP map, detached
    kept_patch_index: torch.Tensor | None = None  # (B, C_cam, K) raster-ordered expert patch indices
    expert_hidden_states: tuple[torch.Tensor, ...] | None = None  # (B, M, C_e) entering each coupled layer


class DeepVisionVLA(nn.Module):
    def __init__(self, config: DeepVisionConfig, vlm: Qwen3VLModel | None = None,
                 expert: DINOv3ViTModel | None = None) -> None:
        super().__init__()
        self.config = config
        robot, text = config.robot, config.vlm.text
        self.vlm = vlm if vlm is not None else backbones.build_qwen_vl(config.vlm)
        self.expert = None
        self.pairs = nn.ModuleList()
        if config.expert is not None:
            self.expert = expert if expert is not None else backbones.build_dinov3(config.expert)
            n, shared = config.coupling.num_layers, config.coupling.share_aligners
            self.pairs.extend(
                CoupledLayerPair(text, config.expert, config.coupling, has_expert_update=shared or j < n - 1)
                for j in range(1 if shared else n))
        # OFT-style proprio token [I]: Linear -> GELU -> Linear into the LLM width.
        self.proprio = nn.Sequential(nn.Linear(robot.state_dim, text.hidden_size), nn.GELU(),
                                     nn.Linear(text.hidden_size, text.hidden_size)) if robot.use_proprio else None
        self.action_head = build_head(config.head, text.hidden_size, robot, text.num_layers)
        self.keep_ratio = config.pruning.keep_ratio  # run-time value, changed by set_keep_ratio
        self._vision_grids: dict[torch.device, backbones.VisionGrid] = {}  # per device, filled on first use
        self.layer_call: LayerCall | None = None  # per-layer hook (activation checkpointing); None: direct call

    @classmethod
    def from_base_weights(cls, config: DeepVisionConfig, dtype: torch.dtype = torch.float32) -> DeepVisionVLA:
        """Qwen3-VL and DINOv3 from the local HF directories named in the config; new modules random."""
        vlm = backbones.load_qwen_vl(config.vlm, dtype)
        expert = backbones.load_dinov3(config.expert, dtype) if config.expert is not None else None
        return cls(config, vlm=vlm, expert=expert).to(dtype)

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """AGVP's run-time ratio; like the baseline, a model without AGVP (shallow coupling) keeps every patch."""
        self.keep_ratio = check_keep_ratio(keep_ratio)

    def kept_patches_per_camera(self, keep_ratio: float | None = None) -> int:
        return kept_patches_per_camera(self.config, self.keep_ratio if keep_ratio is None else keep_ratio)

    def parameter_counts(self) -> dict[str, int]:
        def count(module: nn.Module | None) -> int:
            return 0 if module is None else sum(p.numel() for p in module.parameters())
        return {"vlm_vision": count(self.vlm.visual), "vlm_language": count(self.vlm.language_model),
                "expert": count(self.expert), "coupling": count(self.pairs), "proprio": count(self.proprio),
                "action_head": count(self.action_head), "total": count(self)}

    def forward(self, inputs: ModelInputs, target_actions: torch.Tensor | None = None,
                keep_ratio: float | None = None, output_hidden_states: bool = False,
                kept_patch_index: torch.Tensor | None = None, expert_stream: torch.cuda.Stream | None = None,
                layer_hook: LayerHook | None = None) -> DeepVisionOutput:
        """inputs from DeepVisionProcessor; target_actions (B, H, A) normalised -> DeepVisionOutput.

        kept_patch_index (B, C, K): expert patches to keep instead of AGVP's choice (no saliency is computed;
        for ablations and to measure AGVP's cost). expert_stream: a CUDA stream for the expert's shallow layers.
        layer_hook: called with (LLM layer index, VLA hidden states, expert tokens or None) before each LLM layer;
        what it returns replaces them (the layer-wise sensitivity analysis masks tokens this way).
        """
        cfg = self.config
        stage = _stage
        num_queries = self.action_head.num_query_tokens  # trailing ACTION tokens: H for OFT, Q for query heads
        collect_layers = self.action_head.needs_layer_states
        layer_states: list[torch.Tensor] = []
        language = self.vlm.language_model
        layers = backbones.text_layers(self.vlm)
        visual_index = inputs.visual_index  # (C, Nv)

        # §5.5 step 2: expert embeddings and its shallow (uncoupled) layers.
        expert_tokens = None
        if self.expert is not None:
            with stage("expert_shallow"), _on_stream(expert_stream, inputs.expert_pixels.device):
                expert_tokens = self._expert_shallow(inputs.expert_pixels)

        # §5.5 step 1: VLA tower, input embeddings [prompt; proprio?; the head's query tokens], masks, MRoPE.
        with stage("vla_vision"):
            visual_tokens, deepstack = self._visual_tokens(inputs)
        with stage("prepare"):
            z = language.embed_tokens(inputs.input_ids)
            z = z.index_copy(1, visual_index.flatten(), visual_tokens.to(z.dtype))  # bf16 under autocast
            parts = [z]
            if self.proprio is not None:
                parts.append(self.proprio(inputs.state.to(z.dtype))[:, None])
            parts.append(self.action_head.query_embeddings(z))
            z = torch.cat(parts, dim=1)  # (B, N, C)
            kinds = vla_kinds(inputs.prompt_valid, self.proprio is not None, num_queries)
            mask = attention_mask(kinds)  # (B, N, N)
            positions = self._vla_positions(kinds, visual_index)  # (3, B, N)
            rope = language.rotary_emb(z, positions)

        # §5.5 steps 3-5, one LLM layer at a time: uncoupled layers run alone (the ones before the coupled block
        # give AGVP its action rows); at the first coupled layer AGVP picks the expert patches (one index set for
        # all coupled layers), then each coupled layer shares attention with one expert layer, expert tokens first
        # in the shared attention (Fig. 3c). The coupled block is the last n layers, or the first n (ablation).
        saliency_sum = saliency = kept_index = None
        use_agvp = cfg.uses_agvp and kept_patch_index is None
        saliency_layers = set(cfg.pruning.saliency_layers) if use_agvp else set()
        coupled = cfg.coupled_llm_layers if self.expert is not None else range(0)
        expert_layer_list = backbones.expert_layers(self.expert) if self.expert is not None else []
        expert_states: list[torch.Tensor] = []
        e = coupled_mask = expert_rope = None
        for index in range(len(layers)):
            if index not in coupled:
                if layer_hook is not None:
                    z, _ = layer_hook(index, z, None)
                with stage("llm_shallow"):
                    z, q, k = self._layer(decoder_layer_forward, layers[index], z, rope, mask)
                if index in saliency_layers:
                    with stage("agvp"), torch.no_grad():
                        layer_map = action_to_vision_saliency(q[:, :, -num_queries:], k, mask[:, -num_queries:],
                                                              visual_index, layers[index].self_attn.scaling,
                                                              cfg.pruning.renormalize)
                        saliency_sum = layer_map if saliency_sum is None else saliency_sum + layer_map
            else:
                j = index - coupled.start
                if j == 0:
                    with stage("agvp"):
                        if use_agvp:
                            grid_h, grid_w = cfg.vlm.token_grid
                            saliency = (saliency_sum / len(saliency_layers)).view(z.shape[0], -1, grid_h, grid_w)
                            keep = self.kept_patches_per_camera(keep_ratio)
                            kept_index = select_expert_patches(saliency, cfg.expert.patch_grid, keep,
                                                               cfg.pruning.interpolation)
                        elif kept_patch_index is not None:
                            kept_index = self._check_kept_index(kept_patch_index, z.shape[0])
                        else:  # no layer precedes the coupled block: every patch, in raster order
                            kept_index = self._all_patches(z.shape[0], z.device)
                        if expert_stream is not None:  # join: the expert's shallow layers ran on the side stream
                            torch.cuda.current_stream(z.device).wait_stream(expert_stream)
                        e, expert_rope, cameras = self._keep_expert_tokens(expert_tokens, kept_index, positions,
                                                                           visual_index)
                        coupled_mask = attention_mask(coupled_kinds(kinds, e.shape[1]),
                                                      torch.cat([cameras, cameras.new_full((z.shape[1],), -1)]))
                if output_hidden_states:
                    expert_states.append(e)
                pair = self.pairs[0 if cfg.coupling.share_aligners else j]
                update = j < len(coupled) - 1
                if layer_hook is not None:
                    z, e = layer_hook(index, z, e)
                with stage("coupled"):
                    z, e_next = self._layer(pair, layers[index],
                                            expert_layer_list[len(expert_layer_list) - len(coupled) + j],
                                            z, e, rope, expert_rope, coupled_mask, update)
                e = e_next if update else e
            if index < len(deepstack):  # DeepStack: early visual features added after LLM layers 0, 1, 2
                with stage("llm_shallow"):
                    z = z.index_add(1, visual_index.flatten(), deepstack[index].to(z.dtype))
            if collect_layers:
                layer_states.append(z)

        # §5.5 step 6: final norm and the action head on the query tokens (the H action tokens for OFT).
        with stage("head"):
            hidden = language.norm(z)
            actions = self.action_head(HeadInputs(
                query_hidden=hidden[:, -num_queries:], prompt_tokens=kinds == TokenKind.PROMPT,
                layer_states=tuple(layer_states) if collect_layers else None, state=inputs.state))  # (B, H, A)
        loss = None if target_actions is None else self.action_head.loss(actions, target_actions)
        return DeepVisionOutput(actions=actions, last_hidden_state=hidden, loss=loss, saliency=saliency,
                                kept_patch_index=kept_index,
                                expert_hidden_states=tuple(expert_states) if output_hidden_states else None)

    # ---- steps ----

    def _visual_tokens(self, inputs: ModelInputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Qwen3-VL vision tower on all B*C frames -> (B, C*Nv, C) tokens and DeepStack features."""
        pixels = inputs.vla_pixels
        grid = self._vision_grids.get(pixels.device)
        if grid is None:  # once per device: every frame has the configured size
            grid_h, grid_w = self.config.vlm.token_grid
            merge = self.config.vlm.vision.spatial_merge_size
            grid = backbones.qwen_vision_grid(self.vlm.visual, grid_h * merge, grid_w * merge, pixels.device)
            self._vision_grids[pixels.device] = grid
        pooled, deepstack = backbones.qwen_vision_forward(self.vlm.visual, pixels.to(self.vlm.visual.dtype), grid,
                                                          self.layer_call)
        batch, width = inputs.batch_size, pooled.shape[-1]
        return pooled.view(batch, -1, width), [feature.view(batch, -1, width) for feature in deepstack]

    def _vla_positions(self, kinds: torch.Tensor, visual_index: torch.Tensor) -> torch.Tensor:
        """MRoPE ids (3, B, N) as Qwen3-VL's get_rope_index assigns them, in tensor ops.

        Text tokens advance one position; image tokens share the image's start position in t and add their
        row/column in h/w; after an image the position jumps by max(gh, gw). Padding advances nothing.
        """
        grid_h, grid_w = self.config.vlm.token_grid
        length = kinds.shape[1]
        flat = visual_index.flatten()
        step = (kinds != TokenKind.PAD).long()
        step[:, flat] = 0
        step[:, visual_index[:, -1]] = max(grid_h, grid_w)
        start = step.cumsum(dim=1) - step  # (B, N)
        offsets = torch.zeros(3, length, dtype=torch.long, device=kinds.device)
        token = torch.arange(visual_index.shape[1], device=kinds.device).repeat(visual_index.shape[0])
        offsets[1, flat] = token // grid_w
        offsets[2, flat] = token % grid_w
        return start[None] + offsets[:, None, :]

    def _expert_shallow(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B*C, 3, He, We) -> (B*C, prefix + P, C_e) after the expert layers that are not coupled."""
        num_shallow = len(backbones.expert_layers(self.expert)) - self.config.coupling.num_layers
        return backbones.dinov3_shallow_forward(self.expert, pixels, num_shallow, self.layer_call)

    def _layer(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One layer step through the layer_call hook (activation checkpointing); a plain call without one."""
        return fn(*args) if self.layer_call is None else self.layer_call(fn, *args)

    def _all_patches(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B, C, P): every expert patch of every camera, raster order (shallow coupling: nothing to prune by)."""
        grid_h, grid_w = self.config.expert.patch_grid
        cameras = len(self.config.robot.camera_names)
        return torch.arange(grid_h * grid_w, device=device).expand(batch, cameras, -1)

    def _check_kept_index(self, kept_patch_index: torch.Tensor, batch: int) -> torch.Tensor:
        """A caller's fixed patch selection must be (B, C, K) long with 1 <= K <= patches per camera."""
        cameras = len(self.config.robot.camera_names)
        grid_h, grid_w = self.config.expert.patch_grid
        shape = tuple(kept_patch_index.shape)
        if (kept_patch_index.dtype != torch.long or len(shape) != 3 or shape[:2] != (batch, cameras)
                or not 1 <= shape[2] <= grid_h * grid_w):
            raise ConfigError(f"kept_patch_index is {shape} {kept_patch_index.dtype}: must be ({batch}, {cameras}, "
                              f"K) torch.long with 1 <= K <= {grid_h * grid_w} expert patches per camera")
        return kept_patch_index

    def _keep_expert_tokens(self, tokens: torch.Tensor, kept_index: torch.Tensor, positions: torch.Tensor,
                            visual_index: torch.Tensor) -> tuple[torch.Tensor, Rope | None, torch.Tensor]:
        """Gather the kept patches once; give them positions (deepvision_vla.md §5.4).

        tokens (B*C, prefix + P, C_e), kept_index (B, C, K) -> e (B, M, C_e), RoPE for e or None, camera (M,).
        """
        expert_cfg, coupling = self.config.expert, self.config.coupling
        batch, num_cameras, keep = kept_index.shape
        prefix = expert_cfg.num_prefix_tokens
        flat_index = kept_index.view(batch * num_cameras, keep)
        kept = tokens[:, prefix:].gather(1, flat_index[..., None].expand(-1, -1, tokens.shape[-1]))
        start = positions[0][:, visual_index[:, 0]].float()  # (B, C): MRoPE t of each camera's image
        rows, cols = kept_index // expert_cfg.patch_grid[1], kept_index % expert_cfg.patch_grid[1]
        if coupling.expert_positions == "mrope_grid":  # patch (i, j) -> (t, h0 + i*gh/Pe_h, w0 + j*gw/Pe_w)
            grid_h, grid_w = self.config.vlm.token_grid
            t = start[..., None].expand(-1, -1, keep)
            h = t + rows * (grid_h / expert_cfg.patch_grid[0])
            w = t + cols * (grid_w / expert_cfg.patch_grid[1])
            expert_positions = torch.stack([t, h, w])  # (3, B, C, K)
        else:
            expert_positions = start[None, ..., None].expand(3, -1, -1, keep)
        if coupling.keep_prefix_tokens:
            kept = torch.cat([tokens[:, :prefix], kept], dim=1)
            prefix_positions = start[None, ..., None].expand(3, -1, -1, prefix)
            expert_positions = torch.cat([prefix_positions, expert_positions], dim=-1)
        per_camera = kept.shape[1]
        e = kept.reshape(batch, num_cameras * per_camera, -1)
        cameras = torch.arange(num_cameras, device=e.device).repeat_interleave(per_camera)
        expert_rope = None
        if coupling.expert_positions != "none":
            expert_rope = self.vlm.language_model.rotary_emb(e, expert_positions.flatten(2))
        return e, expert_rope, cameras


def _on_stream(stream: torch.cuda.Stream | None, device: torch.device) -> ContextManager[None]:
    """Run the block on `stream` after the work already queued on the current stream (None: stay put).

    Tensors made there are read on the current stream only after forward() joins the streams, and the side
    stream's next use waits for the current stream first, so the allocator never hands out memory in use.
    """
    if stream is None:
        return contextlib.nullcontext()
    stream.wait_stream(torch.cuda.current_stream(device))
    return torch.cuda.stream(stream)
