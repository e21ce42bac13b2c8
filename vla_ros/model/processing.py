"""Preprocessing shared by training and inference: uint8 frames + instruction + state -> ModelInputs.

Images are processed as tensors on the model's device. The VLA branch reproduces Qwen3-VL's image
processor (rescale, normalise, patchify into (T=2) x 16 x 16 patches grouped by 2x2 merge blocks) without
its aspect-preserving `smart_resize`: every frame is resized to the configured size, so shapes are static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vla_ros.errors import ConfigError, ObservationError
from vla_ros.model.configuration import DeepVisionConfig, SpecialTokenIds
from vla_ros.model.normalization import NormStats
from vla_ros.types import Observation

# SpecialTokenIds field -> token text (Qwen chat and vision markers).
SPECIAL_TOKENS = {"pad": "<|endoftext|>", "im_start": "<|im_start|>", "im_end": "<|im_end|>",
                  "vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>",
                  "image": "<|image_pad|>", "video": "<|video_pad|>"}


def build_byte_tokenizer(tokens: SpecialTokenIds) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per UTF-8 byte, no merges) with Qwen's special tokens at `tokens` ids.

    Needs no download; the tiny config and random-weight benches use it.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    special_ids = {SPECIAL_TOKENS[name]: getattr(tokens, name) for name in SPECIAL_TOKENS}
    if len(set(special_ids.values())) != len(special_ids) or min(special_ids.values()) < len(alphabet):
        raise ConfigError(f"vlm.tokens={special_ids}: special ids must be distinct and >= {len(alphabet)} "
                          "(ids below are the byte tokens)")
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    vocab.update(special_ids)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in SPECIAL_TOKENS.values()])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=SPECIAL_TOKENS["pad"])


@dataclasses.dataclass
class ModelInputs:
    """Everything DeepVisionVLA.forward needs, already on the model's device."""

    input_ids: torch.Tensor  # (B, Np) long: prompt, then PAD up to the bucket
    prompt_valid: torch.Tensor  # (B, Np) bool, False on padding
    vla_pixels: torch.Tensor  # (B * C * gh*2 * gw*2, 3 * 2 * 16 * 16) Qwen patches, raster order per image
    expert_pixels: torch.Tensor | None  # (B * C, 3, He, We) normalised, None for the baseline
    state: torch.Tensor | None  # (B, S) normalised, None unless robot.use_proprio
    visual_index: torch.Tensor  # (C, Nv) long: sequence positions of each camera's visual tokens (static)

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


class DeepVisionProcessor:
    """Turns raw observations into ModelInputs and model outputs back into physical actions."""

    def __init__(self, config: DeepVisionConfig, tokenizer: PreTrainedTokenizerBase, norm_stats: NormStats) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.norm_stats = norm_stats
        _check_special_tokens(tokenizer, config.vlm.tokens)
        _check_stats(norm_stats, config)
        self._prefix, self._between, self._suffix = self._template_pieces()
        grid_h, grid_w = config.vlm.token_grid
        self.tokens_per_image = grid_h * grid_w  # Nv
        ids = config.vlm.tokens
        self._vision_block = [ids.vision_start] + [ids.image] * self.tokens_per_image + [ids.vision_end]

    # ---- layout (static given the config) ----

    def _template_pieces(self) -> tuple[list[int], list[int], list[int]]:
        template = self.config.prompt.template
        before_images, rest = template.split("{images}")
        between, after = rest.split("{instruction}")
        return self._ids(before_images), self._ids(between), self._ids(after)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    @property
    def fixed_prompt_tokens(self) -> int:
        """Prompt tokens besides the instruction."""
        cameras = len(self.config.robot.camera_names)
        return len(self._prefix) + cameras * len(self._vision_block) + len(self._between) + len(self._suffix)

    def visual_token_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(C, Nv) sequence positions of each camera's visual tokens; the same for every sample and bucket."""
        cameras = len(self.config.robot.camera_names)
        starts = len(self._prefix) + 1 + torch.arange(cameras) * len(self._vision_block)
        return (starts[:, None] + torch.arange(self.tokens_per_image)[None, :]).to(device)

    # ---- text ----

    def encode_text(self, instructions: Sequence[str], device: torch.device | str = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> input_ids (B, Np) and prompt_valid (B, Np), padded to the smallest bucket that fits."""
        encoded = []
        for instruction in instructions:
            if not isinstance(instruction, str):
                raise ObservationError(f"instruction must be a str, got {type(instruction).__name__}")
            if self.config.prompt.require_instruction and not instruction.strip():
                raise ObservationError("instruction is empty: this policy needs a task instruction")
            encoded.append(self._ids(instruction))
        longest = max(len(ids) for ids in encoded)
        buckets = self.config.prompt.instruction_token_buckets
        bucket = next((b for b in buckets if b >= longest), None)
        if bucket is None:
            raise ObservationError(f"instruction has {longest} tokens, more than the largest bucket {buckets[-1]} "
                                   "(prompt.instruction_token_buckets)")
        vision = self._vision_block * len(self.config.robot.camera_names)
        length = self.fixed_prompt_tokens + bucket
        input_ids = torch.full((len(encoded), length), self.config.vlm.tokens.pad, dtype=torch.long)
        valid = torch.zeros((len(encoded), length), dtype=torch.bool)
        for row, ids in enumerate(encoded):
            prompt = self._prefix + vision + self._between + ids + self._suffix
            input_ids[row, : len(prompt)] = torch.tensor(prompt)
            valid[row, : len(prompt)] = True
        return input_ids.to(device), valid.to(device)

    # ---- images ----

    def encode_images(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """frames (B, C, H_img, W_img, 3) uint8 RGB on any device -> (vla_pixels, expert_pixels)."""
        robot = self.config.robot
        expected = (len(robot.camera_names), *robot.camera_image_size_px, 3)
        if frames.dtype != torch.uint8 or frames.ndim != 5 or tuple(frames.shape[1:]) != expected:
            raise ObservationError(f"frames must be (B, {', '.join(map(str, expected))}) uint8 RGB, "
                                   f"got {tuple(frames.shape)} {frames.dtype}")
        images = frames.flatten(0, 1).permute(0, 3, 1, 2).float()  # (B*C, 3, H_img, W_img) in [0, 255]
        vlm = self.config.vlm
        vla = _normalize(_resize(images, vlm.image_size_px, vlm.resize_mode), vlm.image_mean, vlm.image_std)
        vla_pixels = qwen_patchify(vla, vlm.vision.patch_size, vlm.vision.spatial_merge_size,
                                   vlm.vision.temporal_patch_size)
        expert = self.config.expert
        if expert is None:
            return vla_pixels, None
        expert_pixels = _normalize(_resize(images, expert.image_size_px, expert.resize_mode),
                                   expert.image_mean, expert.image_std)
        return vla_pixels, expert_pixels

    # ---- state and actions ----

    def encode_state(self, states: torch.Tensor) -> torch.Tensor | None:
        """states (B, S) physical units -> normalised (B, S), or None when the model has no proprio token."""
        if not self.config.robot.use_proprio:
            return None
        return self.norm_stats.normalize_state(states.float())

    def __call__(self, frames: torch.Tensor, instructions: Sequence[str], states: torch.Tensor | None = None
                 ) -> ModelInputs:
        """frames (B, C, H_img, W_img, 3) uint8, B instructions, states (B, S) -> ModelInputs on frames.device."""
        if len(instructions) != frames.shape[0]:
            raise ObservationError(f"got {len(instructions)} instructions for {frames.shape[0]} frame sets")
        input_ids, valid = self.encode_text(instructions, frames.device)
        vla_pixels, expert_pixels = self.encode_images(frames)
        state = None
        if self.config.robot.use_proprio:
            if states is None:
                raise ObservationError("state is required: the checkpoint was trained with use_proprio")
            state = self.encode_state(states.to(frames.device))
        return ModelInputs(input_ids, valid, vla_pixels, expert_pixels, state, self.visual_token_index(frames.device))

    def observations_to_inputs(self, observations: Sequence[Observation], device: torch.device | str) -> ModelInputs:
        if not observations:
            raise ObservationError("got no observations: a batch needs at least one")
        for obs in observations:
            check_observation(obs, self.config)
        frames = torch.from_numpy(np.stack([np.stack(obs.images) for obs in observations])).to(device)
        states = torch.from_numpy(np.stack([obs.state for obs in observations]).astype(np.float32)).to(device)
        return self(frames, [obs.instruction for obs in observations], states)

    def actions_to_physical(self, actions: torch.Tensor) -> np.ndarray:
        """(B, H, A) normalised model output -> (B, H, A) float64 physical units."""
        return self.norm_stats.unnormalize_actions(actions.detach().double().cpu().numpy())


def qwen_patchify(images: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int) -> torch.Tensor:
    """(n, 3, h, w) normalised -> (n * h/p * w/p, 3 * T * p * p), the layout of Qwen3-VL's image processor.

    Patches are ordered by 2x2 merge block (raster over blocks, raster within a block); a still image is
    repeated T times along the temporal axis.
    """
    n, channels, height, width = images.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = images.reshape(n, channels, grid_h // merge_size, merge_size, patch_size,
                             grid_w // merge_size, merge_size, patch_size)
    patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (n, gh/m, gw/m, m, m, 3, p, p)
    patches = patches.unsqueeze(6).expand(*patches.shape[:6], temporal_patch_size, patch_size, patch_size)
    return patches.reshape(n * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    resized = F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=True)
    return resized.clamp(0.0, 255.0)  # bicubic overshoots; the uint8 processors clamp too


def _normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images / 255.0 - mean_t) / std_t


def check_observation(obs: Observation, config: DeepVisionConfig) -> None:
    """Raise ObservationError naming the field, value and expectation; never repair the input."""
    robot = config.robot
    if len(obs.images) != len(robot.camera_names):
        raise ObservationError(f"got {len(obs.images)} images, expected one per camera {robot.camera_names}")
    expected = (*robot.camera_image_size_px, 3)
    for name, image in zip(robot.camera_names, obs.images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != expected:
            shape = getattr(image, "shape", None)
            dtype = getattr(image, "dtype", type(image).__name__)
            raise ObservationError(f"camera '{name}' image is {shape} {dtype}, expected {expected} uint8 RGB")
    state = np.asarray(obs.state)
    if state.shape != (robot.state_dim,) or not np.issubdtype(state.dtype, np.number):
        raise ObservationError(f"state has shape {state.shape} dtype {state.dtype}, expected ({robot.state_dim},) "
                               f"numbers in joint order {robot.joint_names}")
    if not np.all(np.isfinite(state)):
        bad = [n for n, v in zip(robot.joint_names, state) if not np.isfinite(v)]
        raise ObservationError(f"state is not finite for joints {bad}: {state.tolist()}")


def _check_special_tokens(tokenizer: PreTrainedTokenizerBase, tokens: SpecialTokenIds) -> None:
    wrong = {text: (tokenizer.convert_tokens_to_ids(text), getattr(tokens, name))
             for name, text in SPECIAL_TOKENS.items() if tokenizer.convert_tokens_to_ids(text) != getattr(tokens, name)}
    if wrong:
        differences = ", ".join(f"{text} tokenizer {got} != config {want}" for text, (got, want) in wrong.items())
        raise ConfigError(f"tokenizer special token ids differ from vlm.tokens: {differences}")


def _check_stats(stats: NormStats, config: DeepVisionConfig) -> None:
    robot = config.robot
    if stats.action.dim != robot.action_dim:
        raise ConfigError(f"norm stats action dim {stats.action.dim} != robot.action_names ({robot.action_dim})")
    if robot.use_proprio and (stats.state is None or stats.state.dim != robot.state_dim):
        got = None if stats.state is None else stats.state.dim
        raise ConfigError(f"norm stats state dim {got} != robot.state_dim ({robot.state_dim}) with use_proprio")
