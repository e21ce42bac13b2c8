"""SimState <-> JSON-ready dict: what sim_robot_node publishes on /sim/state for the scripted experts.

A scripted expert driven over ROS (scripted_teleop_node) needs the same SimState the in-process experts
read: joint positions, the tool pose, the object poses, the held object and the task layout. The dict
also carries the sim's joint_names and max_velocity_rad_s, so the expert plans with the sim's own limits.

    {"time_s", "task", "seed", "instruction", "letter", "letter_xy": [[x, y], ...] | null,
     "object_xy": {name: [x, y]}, "joint_names": [...], "max_velocity_rad_s": [...],
     "joint_positions": [...], "joint_velocities": [...], "tcp_position": [x, y, z],
     "tcp_rotation": 3x3 rows, "object_poses": {name: {"position": [x, y, z], "rotation": 3x3 rows}},
     "grasped_object": name | null}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_ros.errors import ObservationError
from vla_ros.sim.arm_sim import SimState
from vla_ros.sim.tasks import TaskSpec


def state_to_dict(state: SimState, joint_names: tuple[str, ...],
                  max_velocity_rad_s: tuple[float, ...]) -> dict[str, Any]:
    task = state.task
    return {
        "time_s": float(state.time_s), "task": task.task, "seed": int(task.seed),
        "instruction": task.instruction, "letter": task.letter,
        "letter_xy": None if task.letter_xy is None else np.asarray(task.letter_xy).tolist(),
        "object_xy": {name: [float(v) for v in xy] for name, xy in task.object_xy.items()},
        "joint_names": list(joint_names), "max_velocity_rad_s": [float(v) for v in max_velocity_rad_s],
        "joint_positions": np.asarray(state.joint_positions).tolist(),
        "joint_velocities": np.asarray(state.joint_velocities).tolist(),
        "tcp_position": np.asarray(state.tcp_position).tolist(),
        "tcp_rotation": np.asarray(state.tcp_rotation).tolist(),
        "object_poses": {name: {"position": np.asarray(pos).tolist(), "rotation": np.asarray(rot).tolist()}
                         for name, (pos, rot) in state.object_poses.items()},
        "grasped_object": state.grasped_object,
    }


def _array(data: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        value = np.asarray(data[key], dtype=float)
    except (KeyError, TypeError, ValueError) as err:
        raise ObservationError(f"sim state: field {key!r} is missing or not numeric ({err})") from err
    if value.shape != shape or not np.all(np.isfinite(value)):
        raise ObservationError(f"sim state: field {key!r} must be finite with shape {shape}, got {value.shape}")
    return value


def state_from_dict(data: dict[str, Any]) -> SimState:
    """The SimState a dict from state_to_dict describes; ObservationError naming a bad field."""
    if not isinstance(data, dict):
        raise ObservationError(f"sim state: expected a JSON object, got {type(data).__name__}")
    joints = len(data.get("joint_names") or ())
    if joints == 0:
        raise ObservationError("sim state: field 'joint_names' is missing or empty")
    try:
        poses = {name: (_array(pose, "position", (3,)), _array(pose, "rotation", (3, 3)))
                 for name, pose in data["object_poses"].items()}
        letter_xy = None if data.get("letter_xy") is None else np.asarray(data["letter_xy"], dtype=float)
        task = TaskSpec(str(data["task"]), int(data["seed"]), str(data["instruction"]),
                        {name: (float(xy[0]), float(xy[1])) for name, xy in data["object_xy"].items()},
                        str(data.get("letter", "")), letter_xy)
        time_s = float(data["time_s"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ObservationError(f"sim state: malformed task or object poses ({type(err).__name__}: {err})") from err
    return SimState(time_s, _array(data, "joint_positions", (joints,)), _array(data, "joint_velocities", (joints,)),
                    _array(data, "tcp_position", (3,)), _array(data, "tcp_rotation", (3, 3)), poses,
                    data.get("grasped_object"), task)
