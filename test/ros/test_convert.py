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


# A scene of flat colour patches (8x8 each): away from the patch edges demosaicing and 4:2:2 chroma
# are exact up to rounding, so the decoded image can be compared with the truth.
_PATCH_COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 220],
                           [180, 140, 20], [20, 150, 160], [90, 90, 90], [160, 40, 170]], np.uint8)
SCENE = np.kron(_PATCH_COLOURS.reshape(2, 4, 3).transpose(2, 0, 1), np.ones((8, 8), np.uint8)).transpose(1, 2, 0)
INTERIOR = np.zeros(SCENE.shape[:2], bool)
for _r in range(2):
    for _c in range(4):
        INTERIOR[_r * 8 + 2:_r * 8 + 6, _c * 8 + 2:_c * 8 + 6] = True


def _bayer(pattern: str) -> np.ndarray:
    """The mosaic a sensor with this 2x2 pattern (e.g. 'rggb': R G / G B) records of SCENE."""
    mosaic = np.zeros(SCENE.shape[:2], np.uint8)
    for i, colour in enumerate(pattern):
        dy, dx = divmod(i, 2)
        mosaic[dy::2, dx::2] = SCENE[dy::2, dx::2, "rgb".index(colour)]
    return mosaic[..., None]


_CAMERA_ENCODINGS = {  # encoding -> (raw pixels of SCENE as the driver sends them, OpenCV's own decoding)
    "yuv422": (lambda: cv2.cvtColor(SCENE, cv2.COLOR_RGB2YUV_UYVY), cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (lambda: cv2.cvtColor(SCENE, cv2.COLOR_RGB2YUV_UYVY), cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (lambda: cv2.cvtColor(SCENE, cv2.COLOR_RGB2YUV_YUY2), cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (lambda: cv2.cvtColor(SCENE, cv2.COLOR_RGB2YUV_YUY2), cv2.COLOR_YUV2RGB_YUY2),
    "bayer_rggb8": (lambda: _bayer("rggb"), cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (lambda: _bayer("bggr"), cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (lambda: _bayer("gbrg"), cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (lambda: _bayer("grbg"), cv2.COLOR_BayerGB2RGB),
}


@pytest.mark.parametrize("encoding", sorted(_CAMERA_ENCODINGS))
@pytest.mark.parametrize("pad", [0, 5])
def test_camera_driver_encodings_match_opencv_and_the_scene(encoding, pad):
    """Bug it catches: yuv422/uyvy/yuyv (v4l2, usb_cam) and bayer_*8 (machine-vision cameras) refused,
    or decoded with the wrong byte order or Bayer phase (colours swapped)."""
    make, code = _CAMERA_ENCODINGS[encoding]
    raw = np.ascontiguousarray(make())
    if encoding in ("yuv422", "uyvy"):  # U Y0 V Y1: every second byte is luma
        assert len(np.unique(raw[:8, :8].reshape(-1)[1::2])) == 1
    elif encoding in ("yuv422_yuy2", "yuyv"):  # Y0 U Y1 V
        assert len(np.unique(raw[:8, :8].reshape(-1)[0::2])) == 1
    out = convert.image_to_rgb(_image(encoding, raw, pad))
    np.testing.assert_array_equal(out, cv2.cvtColor(raw, code))  # OpenCV's own conversion
    error = np.abs(out.astype(int) - SCENE.astype(int))[INTERIOR]
    assert error.max() <= 3, (encoding, error.max())


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_keeps_the_top_byte(bigendian):
    depth = (RGB[..., 0].astype(np.uint16) << 8) | RGB[..., 1]  # low byte: detail below 8 bits
    raw = depth.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(5, 14)
    msg = _image("mono16", raw[..., None], pad=4)
    msg.width, msg.is_bigendian = 7, bigendian
    out = convert.image_to_rgb(msg)
    expected = cv2.cvtColor((depth >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    np.testing.assert_array_equal(out, expected)


def test_odd_width_yuv422_is_refused():
    msg = _image("yuyv", np.zeros((4, 6, 1), np.uint8))
    msg.width = 3
    with pytest.raises(ObservationError, match="must be even"):
        convert.image_to_rgb(msg)


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
