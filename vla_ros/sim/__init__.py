"""Simulated robot: a 6-DoF arm with a parallel gripper on a tabletop, for the two showcase tasks.

Why MuJoCo with OSMesa: MuJoCo (PyPI `mujoco`) gives real rigid-body physics and real rendered
camera images from one pip install, and with Debian's libosmesa6 (`MUJOCO_GL=osmesa`) it renders
headless on a CPU-only machine, no display and no GPU. Shadows are off, which keeps a 320x240 frame
at a few milliseconds. Importing this package sets MUJOCO_GL=osmesa unless it is already set (use
MUJOCO_GL=egl on a GPU machine); it must happen before anything imports mujoco.

Modules:
  scene.py       the MJCF, built in code (no asset files), and the scene's dimensions
  arm_sim.py     ArmSim: reset(seed, task), set_position_targets / set_trajectory, step, state,
                 render, task_result. The arm is integrated kinematically under joint velocity
                 limits; the objects are simulated; grasping is kinematic (see arm_sim.py).
  tasks.py       randomised layouts (documented ranges) and success checks -> TaskResult
  kinematics.py  FK and damped-least-squares IK of the tool frame
  experts.py     scripted experts with a step-wise act(state) -> joint targets (7,)

Joints: "joint_1".."joint_6" (rad) and "gripper" (0 = open .. 1 = closed). The gripper closing
near the cup or the pen attaches it to the hand; opening releases it.
Tasks: "pour" (cup into bowl) and "write" (a letter L, V, Z or N on a sheet of paper).
Episodes of the experts last about 9 s of simulated time.
"""

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
