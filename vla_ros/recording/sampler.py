"""Fixed-rate frame sampling from asynchronous message streams, in message-stamp time.

Alignment rule (also in docs/recording.md):

- Streams are *required* (every camera, the joint state, the command) or *latched* (action chunks,
  intervention marks). Only message stamps count, never arrival time, so the result is the same
  whatever the callback threads' timing.
- Start: t0 is the first instant at which every required stream has a message: the largest of
  their first stamps. While waiting for a stream, the others forget messages older than
  max_delay + one frame period before their newest (bounded memory if a stream never comes).
- Frame k has time t_k = t0 + k * 1e9 // fps ns. Each stream feeds frame k with its newest message
  stamped at or before t_k (sample and hold).
- A frame is decided once every required stream has a message stamped at or after t_k (nothing
  newer can change it), or once the most advanced required stream is max_delay beyond t_k (a stream
  that late is treated as having a gap). Frames are never revisited.
- Gap: a camera or joint-state sample older than max_skew at t_k makes the frame *stale*: it is
  kept (uniform timing, and video and table stay aligned) with the stale sample, flagged
  (`stale_input`), and counted per stream. Commands are sample-and-hold by nature (the robot keeps
  its last target), so an old command is not a gap; its stamp is in the frame's provenance.
- Out of order: a message stamped at or before the previous accepted stamp of its stream is ignored
  and counted. A message stamped before an already decided frame is kept (it may feed the next
  frame) and counted as late.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterable

from vla_ros.errors import RecordingError

NS_PER_S = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Sample:
    stamp_ns: int
    payload: Any


@dataclasses.dataclass(frozen=True)
class SampledFrame:
    grid_index: int  # k: frame time = t0 + k / fps; holes in k only come from frames dropped later
    time_ns: int
    samples: dict[str, Sample]  # every required stream, and latched streams that have a sample
    stale_streams: tuple[str, ...]  # sensor streams whose sample is older than max_skew


@dataclasses.dataclass
class StreamCounts:
    accepted: int = 0
    out_of_order: int = 0
    late: int = 0
    stale_frames: int = 0


class FrameSampler:
    """Turns stamped messages into frames at a fixed rate; not thread-safe (the caller locks)."""

    def __init__(self, fps: int, required: Iterable[str], sensors: Iterable[str], latched: Iterable[str],
                 max_skew_ns: int, max_delay_ns: int) -> None:
        self.fps = fps
        self.required = tuple(required)
        self.sensors = frozenset(sensors)
        self.latched = tuple(latched)
        if not self.required:
            raise RecordingError("FrameSampler: needs at least one required stream")
        unknown = self.sensors - set(self.required)
        if unknown:
            raise RecordingError(f"FrameSampler: sensor streams {sorted(unknown)} must also be required")
        self.max_skew_ns = max_skew_ns
        self.max_delay_ns = max_delay_ns
        self._start_window_ns = max_delay_ns + NS_PER_S // fps
        streams = self.required + self.latched
        self._buffers: dict[str, collections.deque[Sample]] = {s: collections.deque() for s in streams}
        self._last_stamp: dict[str, int | None] = {s: None for s in streams}
        self.counts: dict[str, StreamCounts] = {s: StreamCounts() for s in streams}
        self.t0_ns: int | None = None
        self._next_k = 0
        self._last_decided_ns: int | None = None

    def frame_time_ns(self, k: int) -> int:
        assert self.t0_ns is not None
        return self.t0_ns + k * NS_PER_S // self.fps

    def push(self, stream: str, stamp_ns: int, payload: Any) -> list[SampledFrame]:
        """Add one message; returns the frames it completes (usually zero or one)."""
        if stream not in self._buffers:
            raise RecordingError(f"FrameSampler: unknown stream {stream!r}; known {sorted(self._buffers)}")
        counts = self.counts[stream]
        last = self._last_stamp[stream]
        if last is not None and stamp_ns <= last:
            counts.out_of_order += 1
            return []
        self._last_stamp[stream] = stamp_ns
        counts.accepted += 1
        if self._last_decided_ns is not None and stamp_ns <= self._last_decided_ns:
            counts.late += 1
        buf = self._buffers[stream]
        buf.append(Sample(stamp_ns, payload))
        if self.t0_ns is None:
            while len(buf) > 1 and buf[0].stamp_ns < stamp_ns - self._start_window_ns:
                buf.popleft()
            if all(self._buffers[s] for s in self.required):
                self.t0_ns = max(self._buffers[s][0].stamp_ns for s in self.required)
            else:
                return []
        if stream in self.latched:
            return []
        return self._emit()

    def _watermark_ns(self) -> int:
        newest = [self._last_stamp[s] for s in self.required]
        return max(min(newest), max(newest) - self.max_delay_ns)  # type: ignore[type-var,operator]

    def _emit(self) -> list[SampledFrame]:
        frames = []
        watermark = self._watermark_ns()
        while True:
            t_k = self.frame_time_ns(self._next_k)
            if t_k > watermark:
                return frames
            frames.append(self._build(self._next_k, t_k))
            self._last_decided_ns = t_k
            self._next_k += 1

    def _take(self, stream: str, t_ns: int) -> Sample | None:
        """Newest sample stamped <= t_ns; drops the older ones (they can feed no later frame)."""
        buf = self._buffers[stream]
        while len(buf) > 1 and buf[1].stamp_ns <= t_ns:
            buf.popleft()
        if buf and buf[0].stamp_ns <= t_ns:
            return buf[0]
        return None

    def _build(self, k: int, t_ns: int) -> SampledFrame:
        samples: dict[str, Sample] = {}
        stale = []
        for stream in self.required:
            sample = self._take(stream, t_ns)
            assert sample is not None, "every required stream holds a sample <= t0 <= t_k"
            samples[stream] = sample
            if stream in self.sensors and t_ns - sample.stamp_ns > self.max_skew_ns:
                stale.append(stream)
                self.counts[stream].stale_frames += 1
        for stream in self.latched:
            sample = self._take(stream, t_ns)
            if sample is not None:
                samples[stream] = sample
        return SampledFrame(k, t_ns, samples, tuple(stale))

