"""Scripted experts: joint-position targets over time that complete the showcase tasks.

An expert turns Cartesian waypoints of the tool (tcp) into joint knots with damped-least-squares
IK (kinematics.py), times each knot so no joint exceeds SPEED_RATIO of its velocity limit, and
answers `act(state)` with the joint target (7,) interpolated at state.time_s. It plans in two
stages, each from the observed state: reach and close on the object, then (once the object is
held, using the actual grasp offset) the task motion. Drive it at any control rate, like a teleop
operator, and record what it commands:

    expert = make_expert(sim.config)
    while not expert.is_done(sim.state()):
        sim.set_position_targets(expert.act(sim.state()))
        sim.step(1.0 / control_rate_hz)

pour:  side grasp of the cup (tool horizontal, pointing away from the base), lift, carry the cup
       so its opening is above the bowl, tilt it to POUR_TILT_RAD about the tool axis while the
       opening stays in place, hold, tilt back.
write: top-down grasp of the standing pen, lift, put the tip on the sheet at the letter's start,
       trace the letter polyline at WRITE_SPEED_M_S, lift.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from vla_ros.config.sim import SIM_JOINT_NAMES, SimConfig
from vla_ros.errors import ConfigError
from vla_ros.sim.arm_sim import ArmSim, SimState
from vla_ros.sim.kinematics import (ArmKinematics, frame_from_z_y, rotation_about_z,
                                    rotation_error_vector)
from vla_ros.sim.scene import (BOWL_HEIGHT_M, CUP_GRASP_HEIGHT_M, CUP_HEIGHT_M, PAPER_THICKNESS_M,
                               PEN_GRASP_HEIGHT_M)
from vla_ros.sim.tasks import TaskResult, resample_polyline

logger = logging.getLogger(__name__)

SPEED_RATIO = 0.7  # fraction of each joint's velocity limit the plan may use
CARTESIAN_STEP_M = 0.01  # IK waypoint spacing for free-space moves
WRITE_STEP_M = 0.003  # IK waypoint spacing while writing
WRITE_SPEED_M_S = 0.08
POUR_TILT_RAD = np.radians(100.0)
POUR_HEIGHT_ABOVE_RIM_M = 0.06  # cup opening above the bowl rim while pouring
PEN_PRESS_M = 0.001  # tip aimed this far into the sheet so it surely inks
IK_POSITION_TOL_M = 0.002
IK_ROTATION_TOL_RAD = 0.02


class _Plan:
    """Joint knots (times, internal-order positions) built segment by segment."""

    def __init__(self, kinematics: ArmKinematics, max_velocity: np.ndarray, t0_s: float,
                 q0: np.ndarray) -> None:
        self._kin = kinematics
        self._speed = SPEED_RATIO * max_velocity
        self.times_s = [t0_s]
        self.knots = [q0.copy()]

    @property
    def q(self) -> np.ndarray:
        return self.knots[-1]

    @property
    def end_s(self) -> float:
        return self.times_s[-1]

    def _append(self, q: np.ndarray, min_duration_s: float) -> None:
        duration = max(min_duration_s, float(np.max(np.abs(q - self.q) / self._speed)), 1e-3)
        self.times_s.append(self.end_s + duration)
        self.knots.append(q)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self._kin.forward(self.q[:6])

    def move(self, positions: np.ndarray, rotations: list[np.ndarray], duration_s: float) -> None:
        """Through tcp poses (N, 3) / N x (3, 3), spending at least duration_s in total."""
        for position, rotation in zip(positions, rotations):
            solution = self._kin.solve(position, rotation, self.q[:6])
            if not solution.is_within(IK_POSITION_TOL_M, IK_ROTATION_TOL_RAD):
                logger.warning("IK missed a waypoint by %.4f m / %.4f rad", solution.position_error_m,
                               solution.rotation_error_rad)
            self._append(np.append(solution.q_rad, self.q[6]), duration_s / len(positions))

    def joint_move_to(self, position: np.ndarray, rotation: np.ndarray, duration_s: float) -> None:
        """To a tcp pose by joint interpolation (any path): for long free-space moves.

        The damped-least-squares IK follows its seed continuously, so going from tool-down to a
        horizontal tool it can wind the wrist rolls into their limits. Seeds on both sides of the
        wrist singularity are tried and the reachable solution nearest the current joints wins.
        """
        seeds = [self.q[:6], self.q[:6] * [1, 1, 1, 0, -1, 0]]
        solutions = [self._kin.solve(position, rotation, seed) for seed in seeds]
        reachable = [s for s in solutions if s.is_within(IK_POSITION_TOL_M, IK_ROTATION_TOL_RAD)]
        if not reachable:
            reachable = sorted(solutions, key=lambda s: s.position_error_m)[:1]
            logger.warning("IK missed a waypoint by %.4f m / %.4f rad", reachable[0].position_error_m,
                           reachable[0].rotation_error_rad)
        best = min(reachable, key=lambda s: float(np.max(np.abs(s.q_rad - self.q[:6]) / self._speed[:6])))
        self._append(np.append(best.q_rad, self.q[6]), duration_s)

    def line_to(self, position: np.ndarray, rotation: np.ndarray, duration_s: float,
                step_m: float = CARTESIAN_STEP_M) -> None:
        """Straight tcp line from the current pose; the rotation is interpolated along it."""
        start_pos, start_rot = self.tcp_pose()
        count = max(1, int(np.ceil(np.linalg.norm(position - start_pos) / step_m)))
        alphas = np.arange(1, count + 1) / count
        positions = start_pos + alphas[:, None] * (position - start_pos)
        self.move(positions, [_interpolate_rotation(start_rot, rotation, a) for a in alphas], duration_s)

    def gripper(self, value: float, duration_s: float) -> None:
        q = self.q.copy()
        q[6] = value
        self._append(q, duration_s)

    def hold(self, duration_s: float) -> None:
        self._append(self.q.copy(), duration_s)

    def target_at(self, t_s: float) -> np.ndarray:
        times = np.asarray(self.times_s)
        knots = np.asarray(self.knots)
        return np.array([np.interp(t_s, times, knots[:, j]) for j in range(7)])


def _interpolate_rotation(rot_a: np.ndarray, rot_b: np.ndarray, alpha: float) -> np.ndarray:
    """Rotation a fraction alpha of the way from rot_a to rot_b (about a fixed world axis)."""
    vector = rotation_error_vector(rot_b, rot_a) * alpha
    angle = np.linalg.norm(vector)
    if angle < 1e-12:
        return rot_a.copy()
    k = vector / angle
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    step = np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew
    return step @ rot_a


def _radial(xy: np.ndarray) -> np.ndarray:
    """Horizontal unit vector (3,) from the arm's base towards xy."""
    direction = np.array([xy[0], xy[1], 0.0])
    return direction / np.linalg.norm(direction)


class ScriptedExpert:
    """Base: two-stage planning and step-wise `act`; subclasses define the stages."""

    task = ""

    def __init__(self, config: SimConfig, kinematics: ArmKinematics | None = None) -> None:
        self._kin = kinematics if kinematics is not None else ArmKinematics()
        self._joint_names = config.joint_names
        self._to_internal = np.array([config.joint_names.index(n) for n in SIM_JOINT_NAMES])
        self._max_velocity = np.asarray(config.max_velocity_rad_s)[self._to_internal]
        self.reset()

    def reset(self) -> None:
        """Forget the plan (call after every sim reset)."""
        self._reach: _Plan | None = None
        self._task_plan: _Plan | None = None

    def act(self, state: SimState) -> np.ndarray:
        """Joint target (7,) in joint_names order for state.time_s."""
        if state.task.task != self.task:
            raise ConfigError(f"expert: this is the {self.task!r} expert, the sim runs {state.task.task!r}")
        q_now = np.asarray(state.joint_positions)[self._to_internal]
        if self._reach is None:
            self._reach = _Plan(self._kin, self._max_velocity, state.time_s, q_now)
            self._plan_reach(self._reach, state)
        plan = self._reach
        if state.time_s >= self._reach.end_s:
            if self._task_plan is None:
                self._task_plan = _Plan(self._kin, self._max_velocity, state.time_s, q_now)
                if state.grasped_object is None:
                    logger.warning("%s expert: nothing grasped after the reach; holding still", self.task)
                    self._task_plan.hold(0.1)
                else:
                    self._plan_task(self._task_plan, state)
            plan = self._task_plan
        target = plan.target_at(state.time_s)
        out = np.empty(7)
        out[self._to_internal] = target
        return out

    def take_over(self, state: SimState) -> None:
        """Start acting from `state` mid-episode (DAgger): the reach and grasp if nothing is held, else
        straight to the task motion with the object as it is held."""
        self.reset()
        if state.grasped_object is not None:
            q_now = np.asarray(state.joint_positions)[self._to_internal]
            self._reach = _Plan(self._kin, self._max_velocity, state.time_s, q_now)  # ends now

    def stage(self) -> str:
        """'reach' (until the grasp), 'task' or '' (nothing planned yet)."""
        return "task" if self._task_plan is not None else "reach" if self._reach is not None else ""

    def reference_path(self, state: SimState) -> np.ndarray:
        """(N, 7) joint knots (joint_names order) the expert would follow from `state`: reach and grasp if
        nothing is held, else the task motion. A yardstick for how far another controller strays."""
        q_now = np.asarray(state.joint_positions)[self._to_internal]
        plan = _Plan(self._kin, self._max_velocity, state.time_s, q_now)
        if state.grasped_object is None:
            self._plan_reach(plan, state)
        else:
            self._plan_task(plan, state)
        knots = np.asarray(plan.knots)
        out = np.empty_like(knots)
        out[:, self._to_internal] = knots
        return out

    def is_done(self, state: SimState) -> bool:
        return self._task_plan is not None and state.time_s >= self._task_plan.end_s

    def _plan_reach(self, plan: _Plan, state: SimState) -> None:
        raise NotImplementedError

    def _plan_task(self, plan: _Plan, state: SimState) -> None:
        raise NotImplementedError

    @staticmethod
    def _held_offset(state: SimState, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Object pose in the tcp frame: (position (3,), rotation (3, 3))."""
        obj_pos, obj_rot = state.object_poses[name]
        return (state.tcp_rotation.T @ (obj_pos - state.tcp_position), state.tcp_rotation.T @ obj_rot)


class PourExpert(ScriptedExpert):
    task = "pour"

    def _plan_reach(self, plan: _Plan, state: SimState) -> None:
        cup_pos, _ = state.object_poses["cup"]
        approach = _radial(cup_pos)
        grasp_rot = frame_from_z_y(approach, np.cross([0.0, 0.0, 1.0], approach))
        grasp_pos = cup_pos + np.array([0.0, 0.0, CUP_GRASP_HEIGHT_M])
        plan.gripper(0.0, 0.3)
        plan.joint_move_to(grasp_pos - 0.10 * approach + [0.0, 0.0, 0.04], grasp_rot, 1.5)
        plan.line_to(grasp_pos - 0.10 * approach, grasp_rot, 0.3)
        plan.line_to(grasp_pos, grasp_rot, 0.7)
        plan.gripper(1.0, 0.6)

    def _plan_task(self, plan: _Plan, state: SimState) -> None:
        bowl_pos, _ = state.object_poses["bowl"]
        cup_rel_pos, cup_rel_rot = self._held_offset(state, "cup")
        top_in_tcp = cup_rel_pos + cup_rel_rot @ np.array([0.0, 0.0, CUP_HEIGHT_M])
        lift_pos = state.tcp_position + [0.0, 0.0, 0.14]
        plan.line_to(lift_pos, state.tcp_rotation, 0.7)
        opening = bowl_pos + [0.0, 0.0, BOWL_HEIGHT_M + POUR_HEIGHT_ABOVE_RIM_M]
        approach = _radial(opening)
        carry_rot = frame_from_z_y(approach, np.cross([0.0, 0.0, 1.0], approach))  # cup upright again
        plan.line_to(opening - carry_rot @ top_in_tcp, carry_rot, 1.2, step_m=0.02)
        sign = self._tilt_sign(carry_rot, opening, top_in_tcp, plan.q[:6])
        angles = np.linspace(0.0, POUR_TILT_RAD, 15)[1:]
        rotations = [carry_rot @ rotation_about_z(sign * a) for a in angles]
        positions = np.array([opening - rot @ top_in_tcp for rot in rotations])
        plan.move(positions, rotations, 1.4)
        plan.hold(1.0)
        back = [carry_rot @ rotation_about_z(sign * a) for a in angles[::-1][1:]] + [carry_rot]
        plan.move(np.array([opening - rot @ top_in_tcp for rot in back]), back, 1.0)

    def _tilt_sign(self, carry_rot: np.ndarray, opening: np.ndarray, top_in_tcp: np.ndarray,
                   q_seed: np.ndarray) -> float:
        """Tilt direction whose fully tilted pose IK reaches best, then with the least joint motion."""
        costs = []
        for sign in (1.0, -1.0):
            rot = carry_rot @ rotation_about_z(sign * POUR_TILT_RAD)
            solution = self._kin.solve(opening - rot @ top_in_tcp, rot, q_seed)
            costs.append((not solution.is_within(IK_POSITION_TOL_M, IK_ROTATION_TOL_RAD),
                          float(np.abs(solution.q_rad - q_seed).max())))
        return 1.0 if costs[0] <= costs[1] else -1.0


class WriteExpert(ScriptedExpert):
    task = "write"

    def _plan_reach(self, plan: _Plan, state: SimState) -> None:
        pen_pos, _ = state.object_poses["pen"]
        approach = _radial(pen_pos)
        down_rot = frame_from_z_y([0.0, 0.0, -1.0], np.cross(approach, [0.0, 0.0, -1.0]))
        grasp_pos = pen_pos + np.array([0.0, 0.0, PEN_GRASP_HEIGHT_M])
        plan.gripper(0.0, 0.3)
        plan.joint_move_to(grasp_pos + [0.0, 0.0, 0.08], down_rot, 1.5)
        plan.line_to(grasp_pos, down_rot, 0.7)
        plan.gripper(1.0, 0.6)

    def _plan_task(self, plan: _Plan, state: SimState) -> None:
        pen_rel_pos, _ = self._held_offset(state, "pen")  # the pen's origin is its tip
        rot = state.tcp_rotation
        letter = resample_polyline(np.asarray(state.task.letter_xy), WRITE_STEP_M)  # (N, 2)
        paper_z = PAPER_THICKNESS_M - PEN_PRESS_M
        tip_path = np.column_stack([letter, np.full(len(letter), paper_z)])

        def tcp_for_tip(tip: np.ndarray) -> np.ndarray:
            return tip - rot @ pen_rel_pos

        plan.line_to(state.tcp_position + [0.0, 0.0, 0.10], rot, 0.6)
        plan.line_to(tcp_for_tip(tip_path[0] + [0.0, 0.0, 0.04]), rot, 1.0, step_m=0.02)
        plan.line_to(tcp_for_tip(tip_path[0]), rot, 0.5, step_m=0.005)
        length_m = float(np.sum(np.linalg.norm(np.diff(letter, axis=0), axis=1)))
        plan.move(np.array([tcp_for_tip(tip) for tip in tip_path[1:]]), [rot] * (len(tip_path) - 1),
                  length_m / WRITE_SPEED_M_S)
        plan.line_to(tcp_for_tip(tip_path[-1] + [0.0, 0.0, 0.05]), rot, 0.5)


EXPERTS = {"pour": PourExpert, "write": WriteExpert}


def make_expert(config: SimConfig, task: str | None = None,
                kinematics: ArmKinematics | None = None) -> ScriptedExpert:
    """The expert for `task` (default config.task)."""
    name = task if task is not None else config.task
    if name not in EXPERTS:
        raise ConfigError(f"task: no expert for {name!r}; experts exist for {list(EXPERTS)}")
    return EXPERTS[name](config, kinematics)


def run_expert_episode(sim: ArmSim, expert: ScriptedExpert, control_rate_hz: float = 20.0,
                       max_duration_s: float = 15.0,
                       on_step: Callable[[SimState, np.ndarray], None] | None = None) -> TaskResult:
    """Drive `sim` (already reset) with `expert` until it is done; on_step(state, target) per tick."""
    expert.reset()
    dt_s = 1.0 / control_rate_hz
    while sim.time_s < max_duration_s:
        state = sim.state()
        if expert.is_done(state):
            break
        target = expert.act(state)
        if on_step is not None:
            on_step(state, target)
        sim.set_position_targets(target)
        sim.step(dt_s)
    return sim.task_result()
