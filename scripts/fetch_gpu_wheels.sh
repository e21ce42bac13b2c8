#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the CPython 3.12 manylinux x86-64 wheels that a machine with a
# preinstalled torch and no network needs to run the nodes: the ROS 2 runtime (rclpy, Fast DDS, the
# message packages; no build tools; about 45 MB), plus the packages named as arguments; with --only,
# just those (e.g. `--only mujoco` for the sim: a second device call, as the carry limit is 64 MiB).
# Run it after a CPython 3.12 setup (VLA_ROS_PYTHON=python3.12 VLA_ROS_TORCH=none bash scripts/setup.sh):
# the runtime set and its versions are read from that venv. docs/gpu_python312.md says how to use it.
#
#   bash scripts/fetch_gpu_wheels.sh [--only] [PACKAGE ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.whl"
PY="$ROOT/.venv/bin/python"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
[ "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = 3.12 ] || {
  echo "[fetch_gpu_wheels] .venv is not CPython 3.12: run VLA_ROS_PYTHON=python3.12 VLA_ROS_TORCH=none bash scripts/setup.sh" >&2
  exit 1; }
ros=1
if [ "${1:-}" = --only ]; then ros=0; shift; fi
extras=("$@")
# The runtime closure of rclpy and the message packages as installed, without the build tools the
# message wheels also declare (generators, CMake modules, linters): those only build interfaces
# (rosidl-parser and rosidl-generator-py stay: the generated message modules import them).
mapfile -t pins < <("$PY" - "$ros" "${extras[@]}" <<'PY'
import importlib.metadata as md, re, sys
from packaging.requirements import Requirement
ros = ["ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-std-srvs", "ros-geometry-msgs",
       "ros-trajectory-msgs", "ros-diagnostic-msgs", "ros-action-msgs", "ros-builtin-interfaces",
       "ros-unique-identifier-msgs", "ros-rmw-fastrtps-cpp"]
roots = (ros if sys.argv[1] == "1" else []) + sys.argv[2:]
build_only = re.compile(r"cmake|generator-(?!py)|adapter|rosidl-cli|pycommon|ament-package|test-fixture|"
                        r"cppcheck|cpplint|flake8|pep257|uncrustify|^empy$|^lark$|catkin|colcon")
on_gpu_image = {"numpy", "pyyaml", "typing-extensions", "setuptools"}  # the GPU image's Python has these
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
seen, todo = {}, [norm(r) for r in roots]
while todo:
    name = todo.pop()
    if name in seen or build_only.search(name) or name in on_gpu_image:
        continue
    dist = md.distribution(name)
    seen[name] = dist.version
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": "fastrtps"}):
            todo.append(norm(req.name))
for name, version in sorted(seen.items()):
    print(f"{name}=={version}")
PY
)
rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$DEST" "${pins[@]}" 2>&1 \
  | { grep -v "is ignored: it is neither" || true; }
echo "[fetch_gpu_wheels] ${#pins[@]} wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
