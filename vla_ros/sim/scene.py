"""The MJCF of the tabletop scene, built as a string (no asset files), and its dimensions.

World frame: origin at the arm's base on the table top, +x forward (away from the base), +z up.
The table top is the plane z = 0. At q = 0 the arm points straight up.

Arm: 6 revolute joints (yaw, pitch, pitch, roll, pitch, roll: a spherical wrist) and a parallel
gripper whose two fingers slide along the tool y axis. The tool frame is the site "tcp" between
the fingertips: its z axis points out of the flange (the approach direction), its y axis joins the
fingers. Arm geoms do not collide (the arm is driven kinematically, see arm_sim.py).

Objects: cup (red) and pen (green, black tip) are free bodies; bowl (blue) and paper (white) are
mocap bodies placed at reset. Objects of the inactive task are parked out of view.
"""

from __future__ import annotations

import math

import numpy as np

# Arm link lengths [m] (joint axis to next joint axis along the link).
BASE_HEIGHT_M = 0.16  # table to joint_2
UPPER_ARM_M = 0.32  # joint_2 to joint_3
FOREARM_M = 0.30  # joint_3 to joint_5 (joint_4 rolls about the forearm halfway)
WRIST_M = 0.06  # joint_5 to the flange (joint_6 rolls the flange)
FLANGE_TO_TCP_M = 0.075  # flange to the point between the fingertips
FINGER_HALF_OPEN_M = 0.045  # finger travel from closed (touching) to open
ARM_JOINT_RANGES_RAD = ((-2.9, 2.9), (-1.9, 1.9), (-2.6, 2.6), (-2.9, 2.9), (-2.2, 2.2), (-2.9, 2.9))

CUP_RADIUS_M = 0.032
CUP_HEIGHT_M = 0.09
CUP_GRASP_HEIGHT_M = 0.055  # grasp point above the cup's bottom
BOWL_RADIUS_M = 0.08
BOWL_HEIGHT_M = 0.05
PEN_HALF_WIDTH_M = 0.009  # square marker, stands on its tip
PEN_LENGTH_M = 0.14
PEN_GRASP_HEIGHT_M = 0.11  # grasp point above the tip
PAPER_HALF_SIZE_M = (0.105, 0.074)  # A5 sheet, long side along x
PAPER_THICKNESS_M = 0.001

# Where objects of the inactive task wait (outside every camera's view, on the floor).
PARK_POSITIONS = {"cup": (-1.5, 2.0), "pen": (-1.5, 2.3), "bowl": (-1.5, 2.6), "paper": (-1.5, 3.0)}
FLOOR_Z_M = -0.75

FRONT_CAMERA_EYE = (1.0, 0.0, 0.66)
FRONT_CAMERA_TARGET = (0.30, 0.0, 0.14)


def _fmt(values) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def _look_at_xyaxes(eye, target) -> str:
    """MJCF camera xyaxes: the camera looks along its -z, x to the right, y up."""
    forward = np.subtract(target, eye, dtype=float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return _fmt(np.concatenate([right, up]))


def _ring_walls(radius_m: float, height_m: float, thickness_m: float, segments: int,
                rgba: str, prefix: str) -> str:
    """Boxes around a circle: the wall of an open container (collides, unlike a mesh-free shell)."""
    half_width = math.pi * radius_m / segments * 1.08  # slight overlap closes the gaps
    walls = []
    for i in range(segments):
        angle = 2.0 * math.pi * i / segments
        x, y = radius_m * math.cos(angle), radius_m * math.sin(angle)
        walls.append(
            f'<geom name="{prefix}_wall{i}" type="box" size="{thickness_m / 2:.5g} {half_width:.5g} '
            f'{height_m / 2:.5g}" pos="{x:.5g} {y:.5g} {height_m / 2:.5g}" '
            f'euler="0 0 {angle:.5g}" rgba="{rgba}" class="object"/>')
    return "\n        ".join(walls)


def _arm_xml() -> str:
    r = ARM_JOINT_RANGES_RAD
    grey, orange, dark = ".55 .57 .6 1", "1 .55 .1 1", ".15 .15 .17 1"
    return f"""
    <body name="base" pos="0 0 0">
      <geom type="cylinder" size=".07 .025" pos="0 0 .025" rgba="{dark}" class="arm"/>
      <body name="link_1" pos="0 0 .05">
        <joint name="joint_1" axis="0 0 1" range="{_fmt(r[0])}"/>
        <geom type="cylinder" size=".05 .055" pos="0 0 .055" rgba="{grey}" class="arm"/>
        <body name="link_2" pos="0 0 {BASE_HEIGHT_M - 0.05:.4g}">
          <joint name="joint_2" axis="0 1 0" range="{_fmt(r[1])}"/>
          <geom type="cylinder" size=".052 .045" euler="1.5708 0 0" rgba="{orange}" class="arm"/>
          <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM_M:.4g}" size=".038" rgba="{grey}" class="arm"/>
          <body name="link_3" pos="0 0 {UPPER_ARM_M:.4g}">
            <joint name="joint_3" axis="0 1 0" range="{_fmt(r[2])}"/>
            <geom type="cylinder" size=".045 .04" euler="1.5708 0 0" rgba="{orange}" class="arm"/>
            <geom type="capsule" fromto="0 0 0 0 0 {FOREARM_M / 2:.4g}" size=".032" rgba="{grey}" class="arm"/>
            <body name="link_4" pos="0 0 {FOREARM_M / 2:.4g}">
              <joint name="joint_4" axis="0 0 1" range="{_fmt(r[3])}"/>
              <geom type="capsule" fromto="0 0 0 0 0 {FOREARM_M / 2:.4g}" size=".028" rgba="{grey}" class="arm"/>
              <body name="link_5" pos="0 0 {FOREARM_M / 2:.4g}">
                <joint name="joint_5" axis="0 1 0" range="{_fmt(r[4])}"/>
                <geom type="cylinder" size=".033 .032" euler="1.5708 0 0" rgba="{orange}" class="arm"/>
                <body name="link_6" pos="0 0 {WRIST_M:.4g}">
                  <joint name="joint_6" axis="0 0 1" range="{_fmt(r[5])}"/>
                  <geom type="cylinder" size=".03 .01" pos="0 0 -.01" rgba="{dark}" class="arm"/>
                  <geom type="box" size=".02 .06 .012" pos="0 0 .012" rgba="{dark}" class="arm"/>
                  <camera name="wrist" pos=".045 0 0" xyaxes="0 1 0 1 0 0" fovy="75"/>
                  <site name="tcp" pos="0 0 {FLANGE_TO_TCP_M:.4g}" size=".004" rgba="1 1 0 0"/>
                  <body name="finger_left" pos="0 0 .024">
                    <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_HALF_OPEN_M:.4g}"/>
                    <geom type="box" size=".012 .006 .032" pos="0 .006 .032" rgba="{dark}" class="arm"/>
                  </body>
                  <body name="finger_right" pos="0 0 .024">
                    <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_HALF_OPEN_M:.4g}"/>
                    <geom type="box" size=".012 .006 .032" pos="0 -.006 .032" rgba="{dark}" class="arm"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def _objects_xml() -> str:
    red, blue, green = ".9 .1 .1 1", ".1 .3 .95 1", ".1 .8 .2 1"
    cup_walls = _ring_walls(CUP_RADIUS_M, CUP_HEIGHT_M, 0.006, 12, red, "cup")
    bowl_walls = _ring_walls(BOWL_RADIUS_M, BOWL_HEIGHT_M, 0.008, 20, blue, "bowl")
    px, py = PARK_POSITIONS["cup"]
    qx, qy = PARK_POSITIONS["pen"]
    bx, by = PARK_POSITIONS["bowl"]
    sx, sy = PARK_POSITIONS["paper"]
    pen_half = PEN_LENGTH_M / 2
    return f"""
    <body name="cup" pos="{px} {py} {FLOOR_Z_M}">
      <freejoint name="cup_free"/>
      <geom name="cup_bottom" type="cylinder" size="{CUP_RADIUS_M + 0.003:.4g} .003" pos="0 0 .003"
            rgba="{red}" class="object"/>
        {cup_walls}
      <site name="cup_grasp" pos="0 0 {CUP_GRASP_HEIGHT_M:.4g}" size=".004" rgba="0 0 0 0"/>
      <site name="cup_top" pos="0 0 {CUP_HEIGHT_M:.4g}" size=".004" rgba="0 0 0 0"/>
    </body>
    <body name="pen" pos="{qx} {qy} {FLOOR_Z_M}">
      <freejoint name="pen_free"/>
      <geom name="pen_body" type="box" size="{PEN_HALF_WIDTH_M} {PEN_HALF_WIDTH_M} {pen_half - 0.01:.4g}"
            pos="0 0 {pen_half + 0.01:.4g}" rgba="{green}" class="object"/>
      <geom name="pen_tip" type="box" size="{PEN_HALF_WIDTH_M * 0.7:.4g} {PEN_HALF_WIDTH_M * 0.7:.4g} .01"
            pos="0 0 .01" rgba=".05 .05 .05 1" class="object"/>
      <site name="pen_grasp" pos="0 0 {PEN_GRASP_HEIGHT_M:.4g}" size=".004" rgba="0 0 0 0"/>
      <site name="pen_tip" pos="0 0 0" size=".003" rgba="0 0 0 0"/>
    </body>
    <body name="bowl" mocap="true" pos="{bx} {by} {FLOOR_Z_M}">
      <geom name="bowl_bottom" type="cylinder" size="{BOWL_RADIUS_M + 0.004:.4g} .003" pos="0 0 .003"
            rgba="{blue}" class="object"/>
        {bowl_walls}
    </body>
    <body name="paper" mocap="true" pos="{sx} {sy} {FLOOR_Z_M}">
      <geom name="paper" type="box" size="{PAPER_HALF_SIZE_M[0]} {PAPER_HALF_SIZE_M[1]} {PAPER_THICKNESS_M / 2}"
            pos="0 0 {PAPER_THICKNESS_M / 2}" rgba=".97 .97 .97 1" class="object"/>
    </body>"""


def build_scene_xml(timestep_s: float = 0.002, offscreen_width_px: int = 640,
                    offscreen_height_px: int = 480) -> str:
    """The complete MJCF string; the offscreen buffer must be at least the rendered image size."""
    return f"""<mujoco model="vla_ros_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep_s:.6g}" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0"/>
    <global offwidth="{offscreen_width_px}" offheight="{offscreen_height_px}"/>
    <headlight ambient=".35 .35 .35" diffuse=".45 .45 .45" specular="0 0 0"/>
    <map znear=".01"/>
  </visual>
  <default>
    <default class="arm">
      <geom contype="0" conaffinity="0" density="300"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="1" friction="1 .01 .001" density="500"/>
    </default>
    <joint damping=".5" armature=".01"/>
  </default>
  <worldbody>
    <light name="key" pos=".3 -.4 1.6" dir="0 .25 -1" castshadow="false" diffuse=".5 .5 .5"/>
    <light name="fill" pos="1.2 .6 1.2" dir="-1 -.5 -1" castshadow="false" diffuse=".25 .25 .25"/>
    <geom name="floor" type="plane" size="4 4 .1" pos="0 0 {FLOOR_Z_M}" rgba=".32 .33 .36 1"/>
    <geom name="table" type="box" size=".45 .55 .025" pos=".3 0 -.025" rgba=".5 .4 .3 1"/>
    <camera name="front" pos="{_fmt(FRONT_CAMERA_EYE)}"
            xyaxes="{_look_at_xyaxes(FRONT_CAMERA_EYE, FRONT_CAMERA_TARGET)}" fovy="55"/>
    {_arm_xml()}
    {_objects_xml()}
  </worldbody>
</mujoco>
"""
