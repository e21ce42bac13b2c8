"""ROS messages <-> numpy and the package's plain types. No cv_bridge: numpy views only."""

from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image, JointState

from vla_ros.errors import ChunkError, ObservationError
from vla_ros.types import ActionChunk

# encoding -> (channels per pixel, bytes per channel, OpenCV conversion to RGB or None when already RGB).
# Names as sensor_msgs/image_encodings.hpp spells them. YUV 4:2:2 is packed two bytes per pixel:
# "yuv422"/"uyvy" are U Y0 V Y1 (v4l2 UYVY), "yuv422_yuy2"/"yuyv" are Y0 U Y1 V (YUYV). OpenCV names a
# Bayer pattern by the second row's second and third pixels, so ROS's rggb is OpenCV's BG (cv_bridge's
# table too). mono16 is scaled to 8 bits (the top byte).
_ENCODINGS = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/Image of any SUPPORTED_ENCODINGS; handles row padding
    (`step`) and is_bigendian (mono16). Raises ObservationError naming an unsupported encoding."""
    if msg.encoding not in _ENCODINGS:
        raise ObservationError(f"image encoding {msg.encoding!r} is not supported; "
                               f"use one of {list(SUPPORTED_ENCODINGS)}")
    channels, depth, conversion = _ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * depth
    if height == 0 or width == 0:
        raise ObservationError(f"image is empty ({height}x{width})")
    if conversion in (cv2.COLOR_YUV2RGB_UYVY, cv2.COLOR_YUV2RGB_YUY2) and width % 2:
        raise ObservationError(f"{msg.encoding} image: width {width} must be even (two pixels share U and V)")
    if step < row_bytes or len(msg.data) < step * height:
        raise ObservationError(f"malformed {msg.encoding} image: {height}x{width} needs step >= {row_bytes} "
                               f"and {step * height} bytes, got step {step} and {len(msg.data)} bytes")
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = np.ascontiguousarray(buf[:, :row_bytes])
    if depth == 2:  # mono16: keep the top byte
        pixels = (pixels.view(">u2" if msg.is_bigendian else "<u2") >> 8).astype(np.uint8)
    pixels = pixels.reshape(height, width, channels)
    if conversion is None:
        return pixels
    return cv2.cvtColor(pixels, conversion)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage (jpeg or png)."""
    decoded = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ObservationError(f"compressed image (format {msg.format!r}, {len(msg.data)} bytes) "
                               "could not be decoded")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Image:
    """sensor_msgs/Image (rgb8) from an (H, W, 3) uint8 array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ObservationError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    msg = Image()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera",
                      quality: int = 90) -> CompressedImage:
    """sensor_msgs/CompressedImage (jpeg) from an (H, W, 3) uint8 RGB array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ObservationError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ObservationError(f"JPEG encoding of a {rgb.shape} image failed")
    msg = CompressedImage()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.format = "rgb8; jpeg compressed bgr8"  # image_transport's spelling
    msg.data = jpeg.tobytes()
    return msg


def joint_positions(msg: JointState, joint_names: tuple[str, ...]) -> np.ndarray:
    """(J,) float64 positions in `joint_names` order, matched by name (any order in the message)."""
    if len(msg.position) != len(msg.name):
        raise ObservationError(f"joint state has {len(msg.name)} names but {len(msg.position)} positions")
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ObservationError(f"joint state is missing joint(s) {missing}")
    positions = np.array([msg.position[index[n]] for n in joint_names], dtype=np.float64)
    bad = [n for n, v in zip(joint_names, positions) if not np.isfinite(v)]
    if bad:
        raise ObservationError(f"joint state has non-finite position for joint(s) {bad}")
    return positions


def make_joint_state(names: tuple[str, ...], positions: np.ndarray, stamp_ns: int,
                     velocities: np.ndarray | None = None) -> JointState:
    msg = JointState()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    return msg


def chunk_to_msg(chunk: ActionChunk):
    from vla_ros_interfaces.msg import ActionChunk as ActionChunkMsg

    msg = ActionChunkMsg()
    msg.header.stamp = ns_to_stamp(chunk.stamp_ns)
    msg.chunk_id = int(chunk.chunk_id)
    msg.action_space = chunk.action_space
    msg.names = list(chunk.names)
    msg.horizon = int(chunk.actions.shape[0])
    msg.dt = float(chunk.dt_s)
    msg.actions = np.asarray(chunk.actions, dtype=np.float64).ravel().tolist()
    return msg


def msg_to_chunk(msg) -> ActionChunk:
    """ActionChunk from the message; raises ChunkError when the array does not match horizon x names."""
    names = tuple(msg.names)
    horizon = int(msg.horizon)
    actions = np.asarray(msg.actions, dtype=np.float64)
    if horizon <= 0 or not names or actions.size != horizon * len(names):
        raise ChunkError(f"chunk {msg.chunk_id}: {actions.size} values do not fill horizon {horizon} "
                         f"x {len(names)} names")
    return ActionChunk(chunk_id=int(msg.chunk_id), stamp_ns=stamp_to_ns(msg.header.stamp),
                       action_space=str(msg.action_space), names=names, dt_s=float(msg.dt),
                       actions=actions.reshape(horizon, len(names)))


def trajectory_command(msg, names: tuple[str, ...]) -> np.ndarray:
    """(A,) positions of a JointTrajectory's first point (the command in force now), in `names` order."""
    if not msg.points:
        raise ObservationError("joint trajectory has no points")
    point = msg.points[0]
    if len(point.positions) != len(msg.joint_names):
        raise ObservationError(f"joint trajectory point 0 has {len(point.positions)} positions for "
                               f"{len(msg.joint_names)} joint_names")
    index = {name: i for i, name in enumerate(msg.joint_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ObservationError(f"joint trajectory is missing joint(s) {missing}")
    return np.array([point.positions[index[n]] for n in names], dtype=np.float64)
