"""The DAgger supervisor of the simulated arm: when to take over from the policy, what to do, when to hand back.

It plays the person of HG-DAgger: it watches the policy drive the arm and takes over (through
teleop_node, as a leader arm) when the arm strays from the path the scripted expert would follow,
or stalls; the expert then re-plans from where the arm is, finishes the stage it took over in (the
reach and grasp, or the task motion) and hands back. Pure: states in, decisions out.

Deviation: the infinity-norm distance (rad) of the measured arm joints to the expert's reference
path (its joint knots from the episode start, the last hand-back, grasp or drop, resampled every
PATH_STEP_RAD). Stall: the arm moved less than stall_rad over stall_s while the task is unfinished.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_ros.config.sim import SimConfig
from vla_ros.sim.arm_sim import SimState
from vla_ros.sim.experts import make_expert

PATH_STEP_RAD = 0.02
ARM = slice(0, 6)


@dataclasses.dataclass(frozen=True)
class SupervisorAction:
    engaged: bool  # the expert holds the arm (teleop engaged)
    target: np.ndarray | None  # (7,) joint_names order: the leader's position while engaged
    deviation_rad: float  # distance of the arm from the reference path
    reason: str  # why it took over (set on the tick it does), else ""


def resample_path(knots: np.ndarray, step: float = PATH_STEP_RAD) -> np.ndarray:
    """(N, 7) knots -> points no more than `step` apart (infinity norm on the arm joints)."""
    points = [knots[:1]]
    for a, b in zip(knots[:-1], knots[1:]):
        count = max(1, int(np.ceil(np.abs(b[ARM] - a[ARM]).max() / step)))
        points.append(a + (b - a) * (np.arange(1, count + 1) / count)[:, None])
    return np.concatenate(points)


class DaggerSupervisor:
    def __init__(self, config: SimConfig, task: str, deviation_rad: float = 0.3, stall_s: float = 4.0,
                 stall_rad: float = 0.05, catch_up_rad: float = 0.1) -> None:
        self._config, self._task = config, task
        self.deviation_rad, self.stall_s, self.stall_rad = deviation_rad, stall_s, stall_rad
        self.catch_up_rad = catch_up_rad
        self._expert = make_expert(config, task)
        self.takeovers = 0
        self.reset()

    def reset(self) -> None:
        """Before each episode."""
        self._path: np.ndarray | None = None
        self._held: str | None = None
        self._engaged = False
        self._stage = ""
        self._history: list[tuple[float, np.ndarray]] = []
        self._waited_s = 0.0
        self._last_time_s: float | None = None
        self._last_target: np.ndarray | None = None
        self._last_measured: np.ndarray | None = None

    def _deviation(self, q: np.ndarray) -> float:
        return float(np.abs(self._path[:, ARM] - q[ARM]).max(axis=1).min())

    def _stalled(self, state: SimState) -> bool:
        q = np.asarray(state.joint_positions)
        self._history.append((state.time_s, q))
        while self._history and self._history[0][0] < state.time_s - self.stall_s:
            self._history.pop(0)
            if not self._history:
                return False
        if self._history[-1][0] - self._history[0][0] < 0.9 * self.stall_s:
            return False
        travel = np.abs(np.stack([h[1] for h in self._history]) - q).max()
        return bool(travel < self.stall_rad)

    def step(self, state: SimState, task_success: bool) -> SupervisorAction:
        q = np.asarray(state.joint_positions)
        if state.grasped_object != self._held:  # grasped or dropped: the expert's path from here is another
            self._held, self._path = state.grasped_object, None
        if self._path is None:
            self._path = resample_path(self._expert.reference_path(state))
        if not self._engaged:
            deviation = self._deviation(q)
            reason = ""
            if task_success:
                return SupervisorAction(False, None, deviation, "")
            if deviation > self.deviation_rad:
                reason = f"deviation {deviation:.2f} rad > {self.deviation_rad}"
            elif self._stalled(state):
                reason = f"stalled: moved < {self.stall_rad} rad in {self.stall_s} s"
            if not reason:
                return SupervisorAction(False, None, deviation, "")
            self._engaged, self.takeovers = True, self.takeovers + 1
            self._expert.take_over(state)
            self._waited_s, self._last_measured, self._last_target, self._last_time_s = 0.0, None, q.copy(), None
            self._stage = ""
            target = self._act(state)
            return SupervisorAction(True, target, deviation, reason)
        target = self._act(state)
        stage = self._expert.stage()
        finished = self._expert.is_done(self._shifted(state)) or (self._stage == "reach" and stage == "task"
                                                                   and state.grasped_object is not None)
        self._stage = stage
        if finished:  # hand back; the policy goes on from here, measured against a fresh reference
            self._engaged = False
            self._path = resample_path(self._expert.reference_path(state))
            self._history.clear()
            return SupervisorAction(False, None, 0.0, "")
        return SupervisorAction(True, target, 0.0, "")

    def _shifted(self, state: SimState) -> SimState:
        return dataclasses.replace(state, time_s=state.time_s - self._waited_s)

    def _act(self, state: SimState) -> np.ndarray:
        """The expert's target, its clock held back while the arm lags its last target (like an operator)."""
        measured = np.asarray(state.joint_positions)
        behind = np.abs(measured - self._last_target)
        if state.grasped_object is not None:
            behind[6] = 0.0  # fingers stop on a held object
        moving = self._last_measured is None or np.abs(measured - self._last_measured).max() > 1e-3
        if self._last_time_s is not None and moving and behind.max() > self.catch_up_rad:
            self._waited_s += max(state.time_s - self._last_time_s, 0.0)
        self._last_time_s, self._last_measured = state.time_s, measured
        self._last_target = self._expert.act(self._shifted(state))
        return self._last_target
