"""FrameSampler: the alignment rule (newest message stamped <= frame time), gaps, order, lateness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.errors import RecordingError
from vla_ros.recording.sampler import NS_PER_S, FrameSampler

MS = 1_000_000


def make(fps: int = 10, max_skew_ms: int = 100, max_delay_ms: int = 200) -> FrameSampler:
    return FrameSampler(fps, required=["state", "cam", "cmd"], sensors=["state", "cam"], latched=["chunk"],
                        max_skew_ns=max_skew_ms * MS, max_delay_ns=max_delay_ms * MS)


def test_frames_use_newest_message_at_or_before_frame_time():
    s = make()
    frames = []
    for stream in ("cam", "cmd"):
        frames += s.push(stream, 0, f"{stream}0")
    for k in range(0, 40):  # state at 100 Hz: 0, 10, 20 ... ms
        frames += s.push("state", k * 10 * MS, k)
        if k % 10 == 0 and k:
            frames += s.push("cam", k * 10 * MS, f"cam{k}")
            frames += s.push("cmd", k * 10 * MS, f"cmd{k}")
    assert s.t0_ns == 0
    assert [f.grid_index for f in frames] == [0, 1, 2, 3]
    for f in frames:
        assert f.time_ns == f.grid_index * NS_PER_S // 10
        assert f.samples["state"].payload == f.grid_index * 10
        assert f.samples["cam"].stamp_ns == f.time_ns
        assert not f.stale_streams


def test_t0_waits_for_every_required_stream():
    s = make()
    assert s.push("state", 0, 0) == []
    assert s.push("state", 5 * MS, 1) == []
    assert s.push("cam", 7 * MS, "c") == []
    assert s.t0_ns is None
    assert s.push("cmd", 3 * MS, "x") == []
    assert s.t0_ns == 7 * MS  # the latest first stamp: every stream has a message at or before it
    frames = s.push("state", 20 * MS, 2) + s.push("cmd", 20 * MS, "y") + s.push("cam", 20 * MS, "d")
    assert frames[0].time_ns == 7 * MS
    assert (frames[0].samples["state"].payload, frames[0].samples["cmd"].payload) == (1, "x")


def test_streams_forget_old_messages_while_waiting_for_a_missing_one():
    s = make(fps=10, max_delay_ms=200)  # start window 200 + 100 ms
    for k in range(100):
        s.push("state", k * 10 * MS, k)
    assert len(s._buffers["state"]) == 31  # 690 .. 990 ms: older ones are gone
    s.push("cam", 990 * MS, "c")
    s.push("cmd", 990 * MS, "x")
    assert s.t0_ns == 990 * MS


def test_gap_marks_frames_stale_and_counts_them_but_keeps_timing():
    s = make(max_skew_ms=100, max_delay_ms=200)
    s.push("cam", 0, "c0")
    s.push("cmd", 0, "x")
    frames = []
    for k in range(0, 101):  # 1 s of state and commands; the camera is silent after t = 0
        frames += s.push("state", k * 10 * MS, k)
        frames += s.push("cmd", k * 10 * MS + 1, k)
    # Decided by max_delay: up to 1.0 - 0.2 s -> frames 0..8.
    assert [f.grid_index for f in frames] == list(range(9))
    stale = [f.grid_index for f in frames if "cam" in f.stale_streams]
    assert stale == [2, 3, 4, 5, 6, 7, 8]  # frame 1 is exactly 100 ms after the image: not older than max_skew
    assert s.counts["cam"].stale_frames == 7
    assert all(f.samples["cam"].payload == "c0" for f in frames)


def test_out_of_order_and_duplicate_stamps_are_ignored_and_counted():
    s = make()
    s.push("cam", 0, "c0")
    s.push("cmd", 0, "x")
    s.push("state", 50 * MS, "s50")
    assert s.push("state", 40 * MS, "old") == []
    assert s.push("state", 50 * MS, "dup") == []
    assert s.counts["state"].out_of_order == 2
    assert s.counts["state"].accepted == 1


def test_late_message_is_counted_and_can_feed_the_next_frame():
    s = make(max_delay_ms=0)
    frames = [f for stream in ("cam", "cmd", "state") for f in s.push(stream, 0, 0)]
    assert [f.grid_index for f in frames] == [0]
    frames = s.push("state", 150 * MS, "s150")  # delay 0: frame 1 (100 ms) decided with the old camera image
    assert [f.grid_index for f in frames] == [1]
    s.push("cam", 90 * MS, "c90")  # arrives after frame 1 was decided
    assert s.counts["cam"].late == 1
    frames = s.push("cam", 200 * MS, "c200") + s.push("cmd", 200 * MS, "x")
    assert frames[0].grid_index == 2 and frames[0].samples["cam"].payload == "c200"


def test_latched_stream_is_sampled_without_being_waited_for():
    s = make()
    s.push("chunk", 20 * MS, "chunk-a")
    frames = []
    for k in range(0, 4):
        for stream in ("state", "cam", "cmd"):
            frames += s.push(stream, k * 100 * MS, k)
    assert [f.grid_index for f in frames] == [0, 1, 2, 3]
    assert "chunk" not in frames[0].samples
    assert frames[1].samples["chunk"].payload == "chunk-a"


def test_unknown_stream_is_an_error():
    with pytest.raises(RecordingError, match="unknown stream 'nope'"):
        make().push("nope", 0, None)


# Offline reference: frame k's sample for each stream is the newest stamp <= t_k.
def _reference(stamps: dict[str, list[int]], fps: int, t0: int, n: int) -> list[dict[str, int]]:
    out = []
    for k in range(n):
        t = t0 + k * NS_PER_S // fps
        out.append({s: max(x for x in v if x <= t) for s, v in stamps.items()})
    return out


_stamp_lists = st.lists(st.integers(0, 3000), min_size=1, max_size=40, unique=True).map(sorted)


@settings(max_examples=150, deadline=None)
@given(state=_stamp_lists, cam=_stamp_lists, cmd=_stamp_lists, fps=st.sampled_from([5, 10, 30]),
       skew_ms=st.integers(1, 500), delay_ms=st.integers(0, 500))
def test_in_stamp_order_arrival_matches_the_offline_rule(state, cam, cmd, fps, skew_ms, delay_ms):
    stamps = {"state": [x * MS for x in state], "cam": [x * MS for x in cam], "cmd": [x * MS for x in cmd]}
    s = make(fps, skew_ms, delay_ms)
    events = sorted((t, name) for name, ts in stamps.items() for t in ts)
    frames = []
    for t, name in events:
        frames += s.push(name, t, t)
    assert [f.grid_index for f in frames] == list(range(len(frames)))
    if not frames:
        return
    ref = _reference(stamps, fps, s.t0_ns, len(frames))
    for f, want in zip(frames, ref):
        assert {name: smp.stamp_ns for name, smp in f.samples.items()} == want
        assert set(f.stale_streams) == {n for n in ("state", "cam") if f.time_ns - want[n] > skew_ms * MS}
    # Every frame up to the point where all streams have passed is decided.
    last_complete = min(v[-1] for v in stamps.values())
    assert s.frame_time_ns(len(frames)) > last_complete


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["state", "cam", "cmd", "chunk"]), st.integers(0, 2000)),
                       max_size=120), fps=st.sampled_from([7, 10, 30]))
def test_any_arrival_order_keeps_the_invariants(events, fps):
    s = make(fps)
    last: dict[str, int] = {}
    out_of_order = dict.fromkeys(("state", "cam", "cmd", "chunk"), 0)
    frames = []
    for name, ms in events:
        t = ms * MS
        if name in last and t <= last[name]:
            out_of_order[name] += 1
        else:
            last[name] = t
        frames += s.push(name, t, t)
    assert [f.grid_index for f in frames] == list(range(len(frames)))
    assert {n: c.out_of_order for n, c in s.counts.items()} == out_of_order
    for f in frames:
        assert f.time_ns == s.frame_time_ns(f.grid_index)
        assert all(smp.stamp_ns <= f.time_ns for smp in f.samples.values())
        assert {"state", "cam", "cmd"} <= set(f.samples)
