"""Message <-> numpy conversions (messages only, no node)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, JointState

from vla_ros.errors import ChunkError, ObservationError
from vla_ros.ros import convert
from vla_ros.types import ActionChunk

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def _image(encoding: str, pixels: np.ndarray, pad: int = 0) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("encoding,make", [
    ("rgb8", lambda x: x),
    ("bgr8", lambda x: x[..., ::-1]),
    ("rgba8", lambda x: np.concatenate([x, np.full(x.shape[:2] + (1,), 255, np.uint8)], axis=2)),
    ("bgra8", lambda x: np.concatenate([x[..., ::-1], np.zeros(x.shape[:2] + (1,), np.uint8)], axis=2)),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_color_encodings_round_trip(encoding, make, pad):
    out = convert.image_to_rgb(_image(encoding, np.ascontiguousarray(make(RGB)), pad))
    np.testing.assert_array_equal(out, RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0]
    out = convert.image_to_rgb(_image("mono8", grey[..., None]))
    assert out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out[..., 1], grey)


def test_unknown_encoding_is_named():
    with pytest.raises(ObservationError, match="16UC1"):
        convert.image_to_rgb(_image("16UC1", RGB))


def test_truncated_image_is_refused():
    msg = _image("rgb8", RGB)
    msg.data = msg.data[:-10]
    with pytest.raises(ObservationError, match="malformed"):
        convert.image_to_rgb(msg)


def test_compressed_png_round_trip_and_garbage():
    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    assert ok
    out = convert.compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()))
    np.testing.assert_array_equal(out, RGB)
    with pytest.raises(ObservationError, match="could not be decoded"):
        convert.compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))


def test_rgb_to_compressed_round_trips_colours_not_swapped():
    """Catches: JPEG encoded from RGB as if it were BGR (red and blue swapped on the other host)."""
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    msg = convert.rgb_to_compressed(rgb, 5, "cam", quality=95)
    assert "jpeg" in msg.format and msg.header.stamp.nanosec == 5
    back = convert.compressed_to_rgb(msg)
    assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).max() <= 8
    with pytest.raises(ObservationError):
        convert.rgb_to_compressed(rgb[..., 0], 0)


def test_joint_positions_by_name_in_any_order():
    msg = JointState(name=["b", "c", "a"], position=[2.0, 3.0, 1.0])
    np.testing.assert_array_equal(convert.joint_positions(msg, ("a", "b", "c")), [1.0, 2.0, 3.0])
    with pytest.raises(ObservationError, match=r"\['d'\]"):
        convert.joint_positions(msg, ("a", "d"))
    with pytest.raises(ObservationError, match=r"\['b'\]"):
        convert.joint_positions(JointState(name=["a", "b"], position=[0.0, float("nan")]), ("a", "b"))
    with pytest.raises(ObservationError, match="2 names but 1 positions"):
        convert.joint_positions(JointState(name=["a", "b"], position=[0.0]), ("a",))


def test_chunk_round_trip_and_shape_check():
    chunk = ActionChunk(chunk_id=7, stamp_ns=1_500_000_001, action_space="joint_position", names=("a", "b"),
                        dt_s=0.1, actions=np.arange(6, dtype=float).reshape(3, 2))
    back = convert.msg_to_chunk(convert.chunk_to_msg(chunk))
    assert (back.chunk_id, back.stamp_ns, back.names, back.dt_s) == (7, 1_500_000_001, ("a", "b"), 0.1)
    np.testing.assert_array_equal(back.actions, chunk.actions)
    msg = convert.chunk_to_msg(chunk)
    msg.horizon = 4
    with pytest.raises(ChunkError, match="horizon 4"):
        convert.msg_to_chunk(msg)
