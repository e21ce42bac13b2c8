"""ArmSim: the simulated arm, its objects, camera rendering and the task monitors.

Control, as a ros2_control position interface would take it:
- `set_position_targets(q)` holds a target (7,) in config.joint_names order;
- `set_trajectory([(time_from_start_s, q), ...])` follows a trajectory that starts at the current
  positions now and is linearly interpolated between points, then holds the last point.
Targets outside the joint ranges, non-finite values or wrong shapes raise CommandError; nothing
is clipped silently.

The arm is integrated kinematically: every physics step each joint moves toward its current
target by at most max_velocity * timestep (a velocity-limited position controller with a perfect
inner loop). That is exact, deterministic and cannot go unstable. The free objects (cup, pen) are
simulated by MuJoCo; arm geoms do not collide.

Grasping is kinematic: when the gripper closes past GRASP_CLOSE_THRESHOLD (on the transition) with
an object's grasp point within GRASP_RADIUS_M of the tcp, the object is attached to the tcp with
its current relative pose and is then moved with the hand every step (no slip). Opening below
RELEASE_THRESHOLD drops it back into the physics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Sequence

import mujoco
import numpy as np

from vla_ros.config.sim import ARM_JOINT_NAMES, SIM_JOINT_NAMES, SimConfig
from vla_ros.errors import ConfigError, VlaRosError
from vla_ros.sim.scene import (CUP_RADIUS_M, FINGER_HALF_OPEN_M, FLOOR_Z_M, PAPER_THICKNESS_M,
                               PARK_POSITIONS, PEN_HALF_WIDTH_M, build_scene_xml)
from vla_ros.sim.tasks import PourMonitor, TaskResult, TaskSpec, WriteMonitor, sample_task

logger = logging.getLogger(__name__)

GRASP_CLOSE_THRESHOLD = 0.6  # gripper value at which a nearby object is attached
RELEASE_THRESHOLD = 0.4  # gripper value below which a held object is released
GRASP_RADIUS_M = 0.03  # tcp to the object's grasp point
SETTLE_S = 0.1  # physics run at reset so objects rest on the table before time 0
GRASPABLE = ("cup", "pen")
# Half the width the fingers meet when they close on each object (the fingers stop there).
GRIP_HALF_WIDTH_M = {"cup": CUP_RADIUS_M + 0.003, "pen": PEN_HALF_WIDTH_M}
INK_RGBA = np.array([0.02, 0.02, 0.15, 1.0], dtype=np.float32)  # dark blue
INK_HALF_WIDTH_M = 0.0025
INK_LIFT_M = 0.0002  # above the sheet, over the guide
GUIDE_RGBA = np.array([0.50, 0.52, 0.58, 1.0], dtype=np.float32)  # pencil grey: the letter to trace
GUIDE_HALF_WIDTH_M = 0.0015
GUIDE_LIFT_M = 0.00008
FLAT_HALF_HEIGHT_M = 0.00005
INK_DRAW_STEP_M = 0.004


class CommandError(VlaRosError, ValueError):
    """A joint command is malformed or outside the joint ranges."""


@dataclasses.dataclass(frozen=True)
class SimState:
    """A snapshot of the simulation; joint arrays in config.joint_names order."""

    time_s: float
    joint_positions: np.ndarray  # (7,) rad; gripper 0 open .. 1 closed
    joint_velocities: np.ndarray  # (7,) rad/s; gripper 1/s
    tcp_position: np.ndarray  # (3,) world [m]
    tcp_rotation: np.ndarray  # (3, 3) world-from-tcp
    object_poses: dict[str, tuple[np.ndarray, np.ndarray]]  # placed objects: (position (3,), rotation (3, 3))
    grasped_object: str | None
    task: TaskSpec


class ArmSim:
    """Tabletop arm simulation; one instance is not thread-safe (a node serialises access)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        cam = self.config.camera
        xml = build_scene_xml(self.config.physics.timestep_s, max(640, cam.width_px),
                              max(480, cam.height_px))
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in ARM_JOINT_NAMES])
        self._arm_dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in ARM_JOINT_NAMES])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("finger_left", "finger_right")])
        self._finger_dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in ("finger_left", "finger_right")])
        self._free_qpos = {n: m.jnt_qposadr[m.joint(f"{n}_free").id] for n in GRASPABLE}
        self._free_dof = {n: m.jnt_dofadr[m.joint(f"{n}_free").id] for n in GRASPABLE}
        self._mocap = {n: m.body_mocapid[m.body(n).id] for n in ("bowl", "paper")}
        self._body = {n: m.body(n).id for n in ("cup", "pen", "bowl", "paper")}
        self._site = {n: m.site(n).id for n in ("tcp", "cup_grasp", "cup_top", "pen_grasp", "pen_tip")}
        arm_ranges = m.jnt_range[[m.joint(n).id for n in ARM_JOINT_NAMES]]
        # Internal order is SIM_JOINT_NAMES; _to_internal[i] is the config index of internal joint i.
        self._to_internal = np.array([self.config.joint_names.index(n) for n in SIM_JOINT_NAMES])
        self._lower = np.append(arm_ranges[:, 0], 0.0)
        self._upper = np.append(arm_ranges[:, 1], 1.0)
        self._max_velocity = np.asarray(self.config.max_velocity_rad_s)[self._to_internal]
        self._initial_q = np.asarray(self.config.initial_positions, dtype=float)[self._to_internal]
        outside = (self._initial_q < self._lower) | (self._initial_q > self._upper)
        if outside.any():
            i = int(np.argmax(outside))
            raise ConfigError(f"initial_positions: {SIM_JOINT_NAMES[i]} = {self._initial_q[i]} is outside "
                              f"[{self._lower[i]}, {self._upper[i]}]")
        self._renderer: mujoco.Renderer | None = None
        self._q = self._initial_q.copy()  # (7,) internal order
        self._qdot = np.zeros(7)
        self._track_times_s = np.zeros(1)  # (K,) absolute sim times of the target knots
        self._track_q = self._q[None].copy()  # (K, 7) internal order
        self._clock_s = 0.0
        self._grasped: str | None = None
        self._grasp_rel_pos = np.zeros(3)  # object origin in the tcp frame
        self._grasp_rel_rot = np.eye(3)  # tcp-from-object rotation
        self._task: TaskSpec = sample_task(self.config.task, self.config.seed)
        self._monitor: PourMonitor | WriteMonitor | None = None
        self._is_kinematics_current = False
        self.reset()

    # ----------------------------------------------------------------- properties
    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.config.joint_names

    @property
    def time_s(self) -> float:
        return self._clock_s

    @property
    def task(self) -> TaskSpec:
        return self._task

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower (7,), upper (7,)) in joint_names order [rad; gripper 0..1]."""
        return self._from_internal(self._lower), self._from_internal(self._upper)

    def joint_positions(self) -> np.ndarray:
        return self._from_internal(self._q)

    def joint_velocities(self) -> np.ndarray:
        return self._from_internal(self._qdot)

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int | None = None, task: str | None = None) -> SimState:
        """Place the objects of `task` for `seed` (defaults: config) and home the arm; time restarts at 0."""
        self._task = sample_task(task if task is not None else self.config.task,
                                 seed if seed is not None else self.config.seed)
        mujoco.mj_resetData(self.model, self.data)
        self._q = self._initial_q.copy()
        self._qdot = np.zeros(7)
        self._grasped = None
        self._hold_current()
        for name in GRASPABLE + ("bowl", "paper"):
            xy = self._task.object_xy.get(name)
            self._place(name, (xy[0], xy[1], 0.0) if xy is not None else (*PARK_POSITIONS[name], FLOOR_Z_M))
        self._write_arm()
        for _ in range(int(round(SETTLE_S / self.model.opt.timestep))):
            self._physics_step()
        self.data.time = 0.0
        self._clock_s = 0.0
        self._hold_current()
        mujoco.mj_forward(self.model, self.data)
        if self._task.task == "pour":
            self._monitor = PourMonitor(float(self.data.xpos[self._body["cup"], 2]))
        else:
            self._monitor = WriteMonitor(self._task.letter_xy, self.data.mocap_pos[self._mocap["paper"], :2])
        self._is_kinematics_current = True
        return self.state()

    def task_result(self) -> TaskResult:
        """Success and score of the episode so far."""
        return self._monitor.result()

    # ----------------------------------------------------------------- commands
    def set_position_targets(self, q_target: np.ndarray) -> None:
        """Hold q_target (7,) in joint_names order from now on."""
        q = self._check_positions(q_target, "position target")
        self._track_times_s = np.array([self._clock_s])
        self._track_q = q[None]

    def set_trajectory(self, points: Sequence[tuple[float, Sequence[float]]]) -> None:
        """Follow [(time_from_start_s, positions (7,)), ...], starting from the current positions now."""
        if len(points) == 0:
            raise CommandError("trajectory: has no points")
        times = np.array([float(t) for t, _ in points])
        if not np.all(np.isfinite(times)) or times[0] < 0.0 or np.any(np.diff(times) <= 0.0):
            raise CommandError(f"trajectory: time_from_start must be finite, >= 0 and strictly "
                               f"increasing, got {times.tolist()}")
        qs = np.stack([self._check_positions(q, f"trajectory point {i}") for i, (_, q) in enumerate(points)])
        if times[0] > 0.0:  # like joint_trajectory_controller: start from where the arm is
            times = np.concatenate([[0.0], times])
            qs = np.concatenate([self._q[None], qs])
        self._track_times_s = self._clock_s + times
        self._track_q = qs

    def step(self, dt_s: float) -> None:
        """Advance the simulation by dt_s (whole physics steps; the remainder carries over)."""
        is_number = isinstance(dt_s, (int, float, np.integer, np.floating)) and not isinstance(dt_s, bool)
        dt = float(dt_s) if is_number else float("nan")
        if not (math.isfinite(dt) and dt > 0.0):
            raise CommandError(f"step: dt_s must be a finite number > 0, got {dt_s!r}")
        timestep = self.model.opt.timestep
        self._clock_s += dt
        while self.data.time < self._clock_s - 0.5 * timestep:
            self._physics_step()
            self._update_monitor(timestep)
        self._is_kinematics_current = False

    # ----------------------------------------------------------------- observation
    def state(self) -> SimState:
        self._ensure_kinematics()
        d = self.data
        tcp = self._site["tcp"]
        poses = {}
        for name in self._task.object_xy:
            body = self._body[name]
            poses[name] = (d.xpos[body].copy(), d.xmat[body].reshape(3, 3).copy())
        return SimState(self._clock_s, self.joint_positions(), self.joint_velocities(),
                        d.site_xpos[tcp].copy(), d.site_xmat[tcp].reshape(3, 3).copy(), poses,
                        self._grasped, self._task)

    def render(self, camera: str | None = None) -> np.ndarray:
        """(height_px, width_px, 3) uint8 RGB from `camera` (default config.camera.name), with the ink."""
        name = camera if camera is not None else self.config.camera.name
        if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, name) < 0:
            raise CommandError(f"render: unknown camera {name!r}; the scene has 'front' and 'wrist'")
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, self.config.camera.height_px,
                                                 self.config.camera.width_px)
            except mujoco.FatalError as err:
                raise VlaRosError(f"render: no OpenGL context ({err}); set MUJOCO_GL=osmesa (CPU) or egl "
                                  "before anything imports mujoco, e.g. import vla_ros.sim first") from err
        self._ensure_kinematics()
        self._renderer.update_scene(self.data, camera=name)
        self._add_ink(self._renderer.scene)
        return self._renderer.render()

    def task_region_mask(self, camera: str | None = None) -> np.ndarray:
        """(height_px, width_px) bool: pixels showing the task's objects or the hand (link_6 and fingers).

        The task-relevant region of interest (ROI) of the layer-wise sensitivity analysis (DV §3.2: the
        manipulated object, the interaction area and the arm), from MuJoCo's segmentation rendering.
        """
        self.render(camera)  # makes the renderer and checks the camera
        names = (*self._task.object_xy, "link_6", "finger_left", "finger_right")
        bodies = np.array([self.model.body(n).id for n in names])
        renderer = self._renderer
        renderer.enable_segmentation_rendering()
        try:
            renderer.update_scene(self.data, camera=camera if camera is not None else self.config.camera.name)
            segmentation = renderer.render()  # (H, W, 2): object id, object type; -1 where nothing
        finally:
            renderer.disable_segmentation_rendering()
        ids, types = segmentation[..., 0], segmentation[..., 1]
        is_geom = (types == mujoco.mjtObj.mjOBJ_GEOM) & (ids >= 0)
        body = np.full(ids.shape, -1)
        body[is_geom] = self.model.geom_bodyid[ids[is_geom]]
        return np.isin(body, bodies)

    def close(self) -> None:
        """Free the OSMesa context; call before the interpreter exits."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "ArmSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _from_internal(self, values: np.ndarray) -> np.ndarray:
        out = np.empty(7)
        out[self._to_internal] = values
        return out

    def _check_positions(self, q: Sequence[float], what: str) -> np.ndarray:
        """Config-order (7,) -> internal-order (7,), refusing bad values."""
        arr = np.asarray(q, dtype=float)
        if arr.shape != (7,):
            raise CommandError(f"{what}: expected 7 positions for {list(self.joint_names)}, got shape "
                               f"{arr.shape}")
        internal = arr[self._to_internal]
        bad = ~np.isfinite(internal) | (internal < self._lower - 1e-9) | (internal > self._upper + 1e-9)
        if bad.any():
            i = int(np.argmax(bad))
            raise CommandError(f"{what}: {SIM_JOINT_NAMES[i]} = {internal[i]} is not within "
                               f"[{self._lower[i]:.3f}, {self._upper[i]:.3f}]")
        return internal

    def _hold_current(self) -> None:
        self._track_times_s = np.array([self._clock_s])
        self._track_q = self._q[None].copy()

    def _target_at(self, t_s: float) -> np.ndarray:
        times = self._track_times_s
        if t_s <= times[0]:
            return self._track_q[0]
        if t_s >= times[-1]:
            return self._track_q[-1]
        k = int(np.searchsorted(times, t_s)) - 1
        alpha = (t_s - times[k]) / (times[k + 1] - times[k])
        return self._track_q[k] + alpha * (self._track_q[k + 1] - self._track_q[k])

    def _place(self, name: str, position: tuple[float, float, float]) -> None:
        if name in self._mocap:
            self.data.mocap_pos[self._mocap[name]] = position
            self.data.mocap_quat[self._mocap[name]] = (1.0, 0.0, 0.0, 0.0)
        else:
            adr = self._free_qpos[name]
            self.data.qpos[adr:adr + 7] = (*position, 1.0, 0.0, 0.0, 0.0)
            self.data.qvel[self._free_dof[name]:self._free_dof[name] + 6] = 0.0

    def _finger_opening_m(self) -> float:
        opening = FINGER_HALF_OPEN_M * (1.0 - self._q[6])
        if self._grasped is not None:  # fingers stop on the held object
            opening = max(opening, GRIP_HALF_WIDTH_M[self._grasped])
        return opening

    def _write_arm(self) -> None:
        d = self.data
        d.qpos[self._arm_qpos] = self._q[:6]
        d.qvel[self._arm_dof] = self._qdot[:6]
        d.qpos[self._finger_qpos] = self._finger_opening_m()
        d.qvel[self._finger_dof] = 0.0

    def _write_grasped(self) -> None:
        """Move the held object with the tcp (needs current kinematics)."""
        tcp = self._site["tcp"]
        rot_tcp = self.data.site_xmat[tcp].reshape(3, 3)
        position = self.data.site_xpos[tcp] + rot_tcp @ self._grasp_rel_pos
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, (rot_tcp @ self._grasp_rel_rot).ravel())
        adr, dof = self._free_qpos[self._grasped], self._free_dof[self._grasped]
        self.data.qpos[adr:adr + 3] = position
        self.data.qpos[adr + 3:adr + 7] = quat
        self.data.qvel[dof:dof + 6] = 0.0

    def _physics_step(self) -> None:
        timestep = self.model.opt.timestep
        gripper_before = self._q[6]
        target = self._target_at(self.data.time + timestep)
        delta = np.clip(target - self._q, -self._max_velocity * timestep, self._max_velocity * timestep)
        self._q = np.clip(self._q + delta, self._lower, self._upper)
        self._qdot = delta / timestep
        self._write_arm()
        if self._grasped is not None:
            mujoco.mj_kinematics(self.model, self.data)
            self._write_grasped()
        mujoco.mj_step(self.model, self.data)
        # mj_step integrated the whole model; the arm and the held object are kinematic, restore them.
        self._write_arm()
        if self._grasped is not None:
            mujoco.mj_kinematics(self.model, self.data)
            self._write_grasped()
        self._update_grasp(gripper_before)

    def _update_grasp(self, gripper_before: float) -> None:
        gripper = self._q[6]
        if self._grasped is not None:
            if gripper < RELEASE_THRESHOLD:
                logger.debug("released %s at t=%.3f s", self._grasped, self.data.time)
                self._grasped = None
            return
        if not gripper_before < GRASP_CLOSE_THRESHOLD <= gripper:
            return
        mujoco.mj_kinematics(self.model, self.data)
        tcp = self._site["tcp"]
        tcp_pos = self.data.site_xpos[tcp]
        for name in GRASPABLE:
            if name not in self._task.object_xy:
                continue
            if np.linalg.norm(self.data.site_xpos[self._site[f"{name}_grasp"]] - tcp_pos) < GRASP_RADIUS_M:
                rot_tcp = self.data.site_xmat[tcp].reshape(3, 3)
                body = self._body[name]
                self._grasp_rel_pos = rot_tcp.T @ (self.data.xpos[body] - tcp_pos)
                self._grasp_rel_rot = rot_tcp.T @ self.data.xmat[body].reshape(3, 3)
                self._grasped = name
                logger.debug("grasped %s at t=%.3f s", name, self.data.time)
                return

    def _update_monitor(self, dt_s: float) -> None:
        d = self.data  # kinematics are those of the start of the last step: at most one step old
        if isinstance(self._monitor, PourMonitor):
            cup = self._body["cup"]
            self._monitor.update(dt_s, d.xpos[cup], d.xmat[cup].reshape(3, 3),
                                 d.site_xpos[self._site["cup_top"]], d.mocap_pos[self._mocap["bowl"]],
                                 self._grasped == "cup")
        elif self._monitor is not None:
            self._monitor.update(d.site_xpos[self._site["pen_tip"]])

    def _ensure_kinematics(self) -> None:
        if not self._is_kinematics_current:
            mujoco.mj_kinematics(self.model, self.data)
            self._is_kinematics_current = True

    def _add_ink(self, scene: mujoco.MjvScene) -> None:
        """Draw the letter's guide, then the ink over it, as flat boxes on the paper.

        Boxes, not capsules: OSMesa renders a capsule's many triangles slowly (hundreds of
        capsules cost over 100 ms per frame; the decimated boxes cost a few ms).
        """
        if not isinstance(self._monitor, WriteMonitor):
            return
        guide = self._task.letter_xy
        if not _add_polyline(scene, guide, PAPER_THICKNESS_M + GUIDE_LIFT_M, GUIDE_HALF_WIDTH_M, GUIDE_RGBA):
            return
        for stroke in self._monitor.strokes:
            kept = [stroke[0]]
            for point in stroke[1:]:
                if np.linalg.norm(point - kept[-1]) >= INK_DRAW_STEP_M:
                    kept.append(point)
            kept.append(stroke[-1])
            if not _add_polyline(scene, np.asarray(kept), PAPER_THICKNESS_M + INK_LIFT_M, INK_HALF_WIDTH_M,
                                 INK_RGBA):
                return


def _add_polyline(scene: mujoco.MjvScene, points_xy: np.ndarray, z_m: float, half_width_m: float,
                  rgba: np.ndarray) -> bool:
    """One flat box per segment of points_xy (K, 2) at height z_m; False when the scene is full."""
    for a, b in zip(points_xy[:-1], points_xy[1:]):
        if scene.ngeom >= scene.maxgeom:
            logger.warning("guide or ink not fully drawn: the scene holds at most %d geoms", scene.maxgeom)
            return False
        length = float(np.linalg.norm(b - a))
        cos, sin = (b - a) / length if length > 0.0 else (1.0, 0.0)
        rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
        half_size = np.array([length / 2 + half_width_m, half_width_m, FLAT_HALF_HEIGHT_M])
        center = np.array([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, z_m])
        mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_BOX, half_size,
                            center, rotation.ravel(), rgba)
        scene.ngeom += 1
    return True
