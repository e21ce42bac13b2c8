"""Forward and inverse kinematics of the arm's tool frame ("tcp" site) on the MuJoCo model.

IK is damped least squares on the site Jacobian (mj_jacSite): dq = J^T (J J^T + lambda^2 I)^-1 e,
with e = (position error, rotation vector error) in the world frame, steps clipped and joints kept
inside their ranges. It runs on its own MjData, never on a simulation's.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from vla_ros.config.sim import ARM_JOINT_NAMES
from vla_ros.sim.scene import build_scene_xml


@dataclasses.dataclass(frozen=True)
class IkSolution:
    q_rad: np.ndarray  # (6,) arm joints
    position_error_m: float
    rotation_error_rad: float

    def is_within(self, position_tol_m: float, rotation_tol_rad: float) -> bool:
        return self.position_error_m <= position_tol_m and self.rotation_error_rad <= rotation_tol_rad


def rotation_error_vector(rot_target: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """(3,) world-frame rotation vector taking `rot` to `rot_target` (both (3, 3))."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, (rot_target @ rot.T).ravel())
    if quat[0] < 0.0:  # the shorter way round
        quat = -quat
    sin_half = np.linalg.norm(quat[1:])
    if sin_half < 1e-12:
        return np.zeros(3)
    return 2.0 * np.arctan2(sin_half, quat[0]) * quat[1:] / sin_half


def frame_from_z_y(z_axis: np.ndarray, y_hint: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose z column is z_axis and whose y column is y_hint made orthogonal to it."""
    z = np.asarray(z_axis, dtype=float) / np.linalg.norm(z_axis)
    y = np.asarray(y_hint, dtype=float) - np.dot(y_hint, z) * z
    y /= np.linalg.norm(y)
    return np.column_stack([np.cross(y, z), y, z])


def rotation_about_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class ArmKinematics:
    """FK/IK of the "tcp" site over the six arm joints (gripper not involved)."""

    def __init__(self, model: mujoco.MjModel | None = None) -> None:
        self.model = model if model is not None else mujoco.MjModel.from_xml_string(build_scene_xml())
        self._data = mujoco.MjData(self.model)
        joint_ids = [self.model.joint(name).id for name in ARM_JOINT_NAMES]
        self._qpos_adr = np.array([self.model.jnt_qposadr[j] for j in joint_ids])
        self._dof_adr = np.array([self.model.jnt_dofadr[j] for j in joint_ids])
        self.lower_rad = self.model.jnt_range[joint_ids, 0].copy()
        self.upper_rad = self.model.jnt_range[joint_ids, 1].copy()
        self._tcp_id = self.model.site("tcp").id
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def forward(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(6,) joints -> tcp position (3,) and rotation (3, 3) in the world frame."""
        self._data.qpos[self._qpos_adr] = q_rad
        mujoco.mj_kinematics(self.model, self._data)
        return (self._data.site_xpos[self._tcp_id].copy(),
                self._data.site_xmat[self._tcp_id].reshape(3, 3).copy())

    def solve(self, position: np.ndarray, rotation: np.ndarray, q_seed_rad: np.ndarray, *,
              max_iterations: int = 200, damping: float = 0.02, max_step_rad: float = 0.2,
              position_tol_m: float = 1e-4, rotation_tol_rad: float = 1e-3) -> IkSolution:
        """Joints that put the tcp at `position` (3,) with `rotation` (3, 3), starting at q_seed (6,)."""
        q = np.clip(np.asarray(q_seed_rad, dtype=float), self.lower_rad, self.upper_rad)
        damping2_eye = damping**2 * np.eye(6)
        for _ in range(max_iterations):
            pos, rot = self.forward(q)
            error = np.concatenate([position - pos, rotation_error_vector(rotation, rot)])
            if np.linalg.norm(error[:3]) <= position_tol_m and np.linalg.norm(error[3:]) <= rotation_tol_rad:
                break
            mujoco.mj_comPos(self.model, self._data)  # mj_jac needs the com-based quantities
            mujoco.mj_jacSite(self.model, self._data, self._jacp, self._jacr, self._tcp_id)
            jac = np.vstack([self._jacp[:, self._dof_adr], self._jacr[:, self._dof_adr]])  # (6, 6)
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping2_eye, error)
            largest = np.abs(dq).max()
            if largest > max_step_rad:
                dq *= max_step_rad / largest
            q = np.clip(q + dq, self.lower_rad, self.upper_rad)
        pos, rot = self.forward(q)
        return IkSolution(q, float(np.linalg.norm(position - pos)),
                          float(np.linalg.norm(rotation_error_vector(rotation, rot))))

    def jog(self, q_rad: np.ndarray, twist: np.ndarray, dt_s: float) -> np.ndarray:
        """(6,) joints after moving the tcp by `twist` (linear m/s, angular rad/s; world frame) for dt_s.

        For Cartesian teleoperation: a few IK iterations from q, so a pose out of reach gives the
        nearest reachable joints rather than a jump.
        """
        position, rotation = self.forward(q_rad)
        angle = float(np.linalg.norm(twist[3:])) * dt_s
        if angle > 0.0:
            quat = np.empty(4)
            mujoco.mju_axisAngle2Quat(quat, np.asarray(twist[3:], dtype=float), angle)
            delta = np.empty(9)
            mujoco.mju_quat2Mat(delta, quat)
            rotation = delta.reshape(3, 3) @ rotation
        return self.solve(position + np.asarray(twist[:3]) * dt_s, rotation, q_rad, max_iterations=20).q_rad
