"""The freshness gate: stale, missing, out-of-order and future-stamped sources."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.errors import ObservationError, StaleObservationError
from vla_ros.observation import JOINT_STATE_SOURCE, ObservationGate

S = 1_000_000_000


def _gate():
    gate = ObservationGate(("/cam_a", "/cam_b"))
    return gate


def _build(gate, now_ns, max_age_s=0.2, decode_joints=lambda p: np.asarray(p, dtype=float)):
    return gate.build(now_ns, max_age_s, "pour", lambda src, p: p, decode_joints)


def test_builds_with_oldest_stamp_when_all_fresh():
    gate = _gate()
    gate.offer("/cam_a", 10 * S, "A")
    gate.offer("/cam_b", 10 * S + 50_000_000, "B")
    gate.offer(JOINT_STATE_SOURCE, 10 * S + 20_000_000, [1.0, 2.0])
    obs = _build(gate, 10 * S + 100_000_000)
    assert obs.images == ("A", "B") and obs.stamp_ns == 10 * S
    np.testing.assert_array_equal(obs.state, [1.0, 2.0])


def test_missing_source_is_named():
    gate = _gate()
    gate.offer("/cam_a", 10 * S, "A")
    gate.offer(JOINT_STATE_SOURCE, 10 * S, [0.0])
    with pytest.raises(StaleObservationError, match="/cam_b: no message"):
        _build(gate, 10 * S)


def test_stale_source_is_named_with_age():
    gate = _gate()
    gate.offer("/cam_a", 10 * S, "A")
    gate.offer("/cam_b", 9 * S, "B")
    gate.offer(JOINT_STATE_SOURCE, 10 * S, [0.0])
    with pytest.raises(StaleObservationError, match=r"camera /cam_b stale \(age 1.00 s > max 0.20 s\)"):
        _build(gate, 10 * S)


def test_future_stamp_is_refused():
    gate = _gate()
    for src in ("/cam_a", "/cam_b", JOINT_STATE_SOURCE):
        gate.offer(src, 20 * S, [0.0])
    with pytest.raises(StaleObservationError, match="future"):
        _build(gate, 10 * S)


def test_out_of_order_messages_are_dropped_and_counted():
    gate = _gate()
    assert gate.offer("/cam_a", 10 * S, "new")
    assert not gate.offer("/cam_a", 9 * S, "old")
    assert gate.out_of_order_count == 1
    gate.offer("/cam_b", 10 * S, "B")
    gate.offer(JOINT_STATE_SOURCE, 10 * S, [0.0])
    assert _build(gate, 10 * S).images[0] == "new"


def test_decoder_errors_are_not_stale():
    gate = _gate()
    for src in ("/cam_a", "/cam_b", JOINT_STATE_SOURCE):
        gate.offer(src, 10 * S, [0.0])

    def bad(_):
        raise ObservationError("joint state has non-finite position for joint(s) ['joint_5']")

    with pytest.raises(ObservationError, match="joint_5") as info:
        _build(gate, 10 * S, decode_joints=bad)
    assert not isinstance(info.value, StaleObservationError)
