"""Preprocessing: tensor patchify equals transformers' Qwen image processor; prompt layout; bad inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from test.model.tiny import make_processor
from vla_ros.errors import ConfigError, ObservationError
from vla_ros.model.configuration import DeepVisionConfig, VLMConfig
from vla_ros.model.processing import _resize, build_byte_tokenizer, check_observation
from vla_ros.types import Observation


def _smooth_image(height: int, width: int) -> np.ndarray:
    """A gradient with a bright square: resizing it is well defined, unlike noise."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([255 * rows / height, 255 * cols / width, 128 + 0 * rows], axis=-1)
    image[height // 4: height // 2, width // 4: width // 2] = 240
    return image.astype(np.uint8)


@pytest.mark.parametrize("size_px", [64, 256])
def test_vla_pixels_equal_qwen_image_processor(size_px):
    base = DeepVisionConfig.tiny()
    # The frame arrives at the VLA size, so neither side resizes: this compares rescale, normalise, patchify.
    config = dataclasses.replace(
        base, robot=dataclasses.replace(base.robot, camera_image_size_px=(size_px, size_px)),
        vlm=dataclasses.replace(base.vlm, image_size_px=(size_px, size_px)))
    processor = make_processor(config)
    image = np.random.default_rng(size_px).integers(0, 256, (size_px, size_px, 3), dtype=np.uint8)
    ours, _ = processor.encode_images(torch.from_numpy(image)[None, None])
    reference = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                         image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                         size={"shortest_edge": 32 * 32, "longest_edge": 1024 * 1024})
    expected = reference(images=[image], return_tensors="pt")
    assert expected["image_grid_thw"].tolist() == [[1, size_px // 16, size_px // 16]]
    torch.testing.assert_close(ours, expected["pixel_values"].float(), atol=1e-6, rtol=0)


def test_resize_is_close_to_pil_bicubic():
    image = _smooth_image(240, 320)
    ours = _resize(torch.from_numpy(image).permute(2, 0, 1)[None].float(), (64, 64), "bicubic")[0]
    pil = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float32)
    mean_abs_diff = np.abs(ours.permute(1, 2, 0).numpy() - pil).mean()
    assert mean_abs_diff < 2.0, f"mean |ours - PIL| = {mean_abs_diff:.2f} grey levels"


def test_expert_pixels_are_imagenet_normalised_at_expert_size(tiny_processor):
    frames = torch.full((1, 1, 240, 320, 3), 255, dtype=torch.uint8)
    _, expert = tiny_processor.encode_images(frames)
    assert expert.shape == (1, 3, 128, 128)
    expected = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    torch.testing.assert_close(expert[0, :, 0, 0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_prompt_layout_and_padding(tiny_processor):
    input_ids, valid = tiny_processor.encode_text(["pick", "pick up the cube"])
    tokenizer = tiny_processor.tokenizer
    text = tokenizer.decode(input_ids[1][valid[1]])
    image_block = "<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>"
    assert text == f"<|im_start|>user\n{image_block}pick up the cube<|im_end|>\n<|im_start|>assistant\n"
    assert valid[0].sum() == valid[1].sum() - len(" up the cube")  # one byte token per character
    assert not valid[0, -1] and (input_ids[0][~valid[0]] == 256).all()  # padded at the end with <|endoftext|>
    index = tiny_processor.visual_token_index()
    assert (input_ids[:, index.flatten()] == 261).all()


def test_instruction_errors_are_observation_errors(tiny_processor):
    with pytest.raises(ObservationError, match="instruction is empty"):
        tiny_processor.encode_text(["   "])
    with pytest.raises(ObservationError, match="largest bucket 64"):
        tiny_processor.encode_text(["x" * 65])
    relaxed = dataclasses.replace(tiny_processor.config, prompt=dataclasses.replace(
        tiny_processor.config.prompt, require_instruction=False))
    ids, valid = make_processor(relaxed).encode_text([""])
    assert valid.sum() == tiny_processor.fixed_prompt_tokens


def _observation(**changes) -> Observation:
    fields = dict(images=(np.zeros((240, 320, 3), np.uint8),), state=np.zeros(7), instruction="pick", stamp_ns=1)
    fields.update(changes)
    return Observation(**fields)


@pytest.mark.parametrize("changes, message", [
    (dict(images=(np.zeros((240, 320, 3), np.float32),)), r"camera 'front' image is \(240, 320, 3\) float32"),
    (dict(images=(np.zeros((480, 640, 3), np.uint8),)), r"expected \(240, 320, 3\) uint8"),
    (dict(images=(np.zeros((240, 320), np.uint8),)), r"camera 'front' image is \(240, 320\)"),
    (dict(images=()), "got 0 images, expected one per camera"),
    (dict(state=np.array([0, 0, np.nan, 0, 0, 0, 0.0])), r"not finite for joints \['joint_3'\]"),
    (dict(state=np.zeros(6)), r"state has shape \(6,\)"),
])
def test_bad_observations_raise_value_errors_with_a_message(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        check_observation(_observation(**changes), DeepVisionConfig.tiny())
    assert isinstance(info.value, ObservationError)


def test_wrong_frame_tensor_is_refused(tiny_processor):
    with pytest.raises(ObservationError, match=r"frames must be \(B, 1, 240, 320, 3\) uint8"):
        tiny_processor.encode_images(torch.zeros(1, 1, 240, 320, 3))


def test_byte_tokenizer_uses_the_configured_special_ids():
    tokens = VLMConfig().tokens  # Qwen3-VL ids, far above the 256 byte tokens
    tokenizer = build_byte_tokenizer(tokens)
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == tokens.image == 151655
    ids = tokenizer("é<|im_start|>", add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 and ids[-1] == tokens.im_start  # two UTF-8 bytes, then the special token
    with pytest.raises(ConfigError, match="distinct and >= 256"):
        build_byte_tokenizer(dataclasses.replace(tokens, image=255))
