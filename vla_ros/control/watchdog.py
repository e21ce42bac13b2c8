"""Watchdog states and the rule that decides whether the arm may follow the plan this tick."""

from __future__ import annotations

import enum

from vla_ros.config.safety import WatchdogConfig


class WatchdogState(enum.Enum):
    WAITING = "waiting"  # no command stream yet (start-up, after reset or arming): nothing is sent
    RUNNING = "running"  # following the plan
    HOLD = "hold"  # decelerating within the limits, then keeping the last command
    ESTOP = "estop"  # like HOLD, latched until reset() with the e-stop released


class HoldReason(enum.Enum):
    NONE = "none"
    ESTOP = "estop"  # e-stop latched
    ESTOP_HEARTBEAT = "estop_heartbeat"  # heartbeat mode: the e-stop source went silent
    NO_JOINT_STATE = "no_joint_state"  # no joint state received yet
    JOINT_STATE_INVALID = "joint_state_invalid"  # newest joint state had NaN/inf or the wrong size
    JOINT_STATE_STALE = "joint_state_stale"  # no usable joint state received for joint_state_timeout_s
    CHUNK_TIMEOUT = "chunk_timeout"  # no chunk accepted for chunk_timeout_s
    NO_PLAN = "no_plan"  # no accepted chunk covers now (none yet, all steps done, or refused)
    STOPPING = "stopping"  # after a stop: braking, or at rest waiting for a joint state taken since


def find_hold_reason(*, now_ns: int, is_estop_latched: bool, is_estop_source_silent: bool,
                     joint_state_received_ns: int | None, is_joint_state_valid: bool,
                     last_chunk_arrival_ns: int | None, plan_covers_now: bool,
                     cfg: WatchdogConfig) -> HoldReason:
    """Why the arm must not follow the plan now, most serious first; NONE if it may.

    Joint states are judged by when they were received (this node's clock), never by the robot's
    stamps: a robot clock ahead or behind must neither defeat the watchdog nor hold forever.
    """
    if is_estop_latched:
        return HoldReason.ESTOP
    if is_estop_source_silent:
        return HoldReason.ESTOP_HEARTBEAT
    if not is_joint_state_valid:
        return HoldReason.JOINT_STATE_INVALID
    if joint_state_received_ns is None:
        return HoldReason.NO_JOINT_STATE
    if now_ns - joint_state_received_ns > cfg.joint_state_timeout_s * 1e9:
        return HoldReason.JOINT_STATE_STALE
    if last_chunk_arrival_ns is not None and now_ns - last_chunk_arrival_ns > cfg.chunk_timeout_s * 1e9:
        return HoldReason.CHUNK_TIMEOUT
    if not plan_covers_now:
        return HoldReason.NO_PLAN
    return HoldReason.NONE
