"""Per-camera video: streaming encoder (PyAV), crash-tolerant staging file, final mp4, decoding.

While an episode runs, each camera is encoded as it arrives into a *fragmented* mp4 (a fragment is
closed at every key frame and written through at once), so a killed process leaves a file whose
complete fragments decode: at most one key-frame interval is lost. Finalising remuxes the packets
(no re-encoding) into a plain mp4 with the index at the front. Frame k of the episode has
pts = k in a 1/fps time base, so the video time of a frame equals its `timestamp` column, as
LeRobot's decoder expects. No B-frames, so any prefix of packets decodes.
"""

from __future__ import annotations

import dataclasses
import fractions
import logging
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from vla_ros.errors import RecordingError
from vla_ros.config.recorder import VideoConfig

log = logging.getLogger(__name__)

_ENCODERS = {"h264": "libx264", "mpeg4": "mpeg4", "av1": "libsvtav1"}
_FRAGMENTED_FLAGS = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


def _encoder_options(opts: VideoConfig, gop: int) -> dict[str, str]:
    if opts.codec == "h264":
        return {"preset": opts.preset, "crf": str(opts.crf), "bf": "0", "g": str(gop)}
    if opts.codec == "av1":
        return {"preset": opts.preset if opts.preset.isdigit() else "10", "crf": str(opts.crf), "g": str(gop),
                "svtav1-params": "pred-struct=1"}  # low-delay: no reordered frames
    return {"qscale": str(max(1, opts.crf // 8)), "g": str(gop), "bf": "0"}


class StreamingVideoWriter:
    """Encodes RGB frames as they come into a fragmented mp4; not thread-safe (one thread per camera)."""

    def __init__(self, path: Path, fps: int, height_px: int, width_px: int, opts: VideoConfig) -> None:
        self.path = path
        self.height_px, self.width_px = height_px, width_px
        gop = max(1, round(opts.keyframe_interval_s * fps))
        self._container = av.open(str(path), "w", format="mp4", options=dict(_FRAGMENTED_FLAGS))
        try:
            stream = self._container.add_stream(_ENCODERS[opts.codec], rate=fps,
                                                options=_encoder_options(opts, gop))
            stream.width, stream.height, stream.pix_fmt = width_px, height_px, "yuv420p"
            stream.codec_context.time_base = fractions.Fraction(1, fps)
            if opts.codec == "mpeg4":
                stream.codec_context.gop_size = gop
        except Exception:
            self._container.close()
            raise
        self._stream = stream
        self.frames_written = 0
        self.resized_frames = 0

    def write(self, grid_index: int, image_rgb: np.ndarray) -> None:
        """image_rgb: (H_img, W_img, 3) uint8; resized to the stream size when it differs."""
        if image_rgb.shape[:2] != (self.height_px, self.width_px):
            image_rgb = cv2.resize(image_rgb, (self.width_px, self.height_px), interpolation=cv2.INTER_AREA)
            self.resized_frames += 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image_rgb), format="rgb24")
        frame.pts = grid_index
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()


@dataclasses.dataclass(frozen=True)
class FinalVideo:
    frames: int
    grid_indices: tuple[int, ...]  # pts of each frame in 1/fps units, in order
    verified: bool  # every kept packet was decoded


def _grid_index(pts: int, time_base: fractions.Fraction, fps: int) -> int:
    return int(round(pts * time_base * fps))


def finalize_video(src: Path, dst: Path, fps: int, *, max_grid_index: int | None = None,
                   verify: bool = False) -> FinalVideo:
    """Remux a (possibly truncated) fragmented mp4 into a plain mp4 at dst, keeping packets in order.

    Stops at the first packet past the file's end, past max_grid_index, or (verify=True) that does
    not decode. Raises RecordingError if nothing usable is left.
    """
    size = src.stat().st_size
    try:
        inp = av.open(str(src))
    except av.error.FFmpegError as err:
        raise RecordingError(f"video {src} cannot be opened: {err}") from err
    grid: list[int] = []
    try:
        if not inp.streams.video:
            raise RecordingError(f"video {src} has no video stream")
        in_stream = inp.streams.video[0]
        out = av.open(str(dst), "w", format="mp4", options={"movflags": "faststart"})
        try:
            out_stream = out.add_stream_from_template(in_stream, opaque=True)
            decoder = in_stream.codec_context if verify else None
            try:
                for packet in inp.demux(in_stream):
                    if packet.dts is None or packet.pts is None:
                        continue  # demuxer's end-of-stream marker
                    if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > size:
                        break
                    k = _grid_index(packet.pts, packet.time_base, fps)
                    if max_grid_index is not None and k > max_grid_index:
                        break
                    if grid and k <= grid[-1]:
                        raise RecordingError(f"video {src}: frame pts not increasing ({k} after {grid[-1]})")
                    if decoder is not None:
                        try:
                            decoder.decode(packet)
                        except av.error.FFmpegError:
                            break
                    packet.stream = out_stream
                    out.mux(packet)
                    grid.append(k)
            except av.error.FFmpegError as err:  # truncated fragment: keep what came before
                log.info("video %s ends in an unreadable part after %d frames: %s", src, len(grid), err)
        finally:
            out.close()
    finally:
        inp.close()
    if not grid:
        dst.unlink(missing_ok=True)
        raise RecordingError(f"video {src} holds no decodable frame")
    return FinalVideo(len(grid), tuple(grid), verify)


def iter_video_frames(path: Path, fps: int) -> Iterator[tuple[np.ndarray, int]]:
    """Frames of an mp4 one at a time: ((H_img, W_img, 3) uint8 RGB, grid index)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24"), _grid_index(frame.pts, frame.time_base, fps)


def decode_video(path: Path, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """All frames of an mp4: (N, H_img, W_img, 3) uint8 RGB and their grid indices (N,) int64."""
    frames, grid = [], []
    for image, k in iter_video_frames(path, fps):
        frames.append(image)
        grid.append(k)
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(frames), np.asarray(grid, np.int64)


@dataclasses.dataclass(frozen=True)
class VideoProbe:
    frames: int
    height_px: int
    width_px: int
    codec: str
    fps: float


def probe_video(path: Path) -> VideoProbe:
    """Header facts of a finalised mp4 (no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        return VideoProbe(int(stream.frames), stream.codec_context.height, stream.codec_context.width,
                          stream.codec_context.name, rate)


class ImageStats:
    """Per-channel min/max/mean/std of a subsample of frames, values in [0, 1] (LeRobot's convention)."""

    def __init__(self, every_n_frames: int, stride_px: int = 4) -> None:
        self.every_n_frames = max(1, every_n_frames)
        self.stride_px = stride_px
        self._seen = 0
        self.count = 0
        self._min = np.full(3, np.inf)
        self._max = np.full(3, -np.inf)
        self._sum = np.zeros(3)
        self._sumsq = np.zeros(3)
        self._pixels = 0

    def add(self, image_rgb: np.ndarray) -> None:
        self._seen += 1
        if (self._seen - 1) % self.every_n_frames:
            return
        px = image_rgb[:: self.stride_px, :: self.stride_px].reshape(-1, 3).astype(np.float64) / 255.0
        self._min = np.minimum(self._min, px.min(axis=0))
        self._max = np.maximum(self._max, px.max(axis=0))
        self._sum += px.sum(axis=0)
        self._sumsq += (px * px).sum(axis=0)
        self._pixels += px.shape[0]
        self.count += 1

    def result(self) -> dict[str, list] | None:
        """Stats shaped (3, 1, 1) per LeRobot; None before any frame."""
        if not self.count:
            return None
        mean = self._sum / self._pixels
        std = np.sqrt(np.maximum(self._sumsq / self._pixels - mean * mean, 0.0))

        def chw(v: np.ndarray) -> list:
            return v.reshape(3, 1, 1).tolist()

        return {"min": chw(self._min), "max": chw(self._max), "mean": chw(mean), "std": chw(std),
                "count": [self.count]}

