# Source this after scripts/setup.sh: the venv, the colcon-built interfaces, and ROS settings.
# Setting LD_LIBRARY_PATH here (and the bootstrapper's guard) keeps python from re-executing
# itself on import, which would confuse subprocesses and test runners.
_vla_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_vla_venv="$_vla_root/.venv"
for _vla_site in "$_vla_venv"/lib/python3*/site-packages; do :; done  # the venv's one Python (3.11 or 3.12)
_vla_libs="$_vla_venv/lib"
for _d in "$_vla_site"/ros_*.libs; do [ -d "$_d" ] && _vla_libs="$_vla_libs:$_d"; done
_vla_libs="$_vla_root/install/vla_ros_interfaces/lib:$_vla_libs"
export VIRTUAL_ENV="$_vla_venv"
export PATH="$_vla_venv/bin:$PATH"
export LD_LIBRARY_PATH="$_vla_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export AMENT_PREFIX_PATH="$_vla_root/install/vla_ros:$_vla_root/install/vla_ros_interfaces:$_vla_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
_vla_py=""
for _d in "$_vla_root"/install/vla_ros_interfaces/lib/python3*/site-packages "$_vla_root"/install/vla_ros_interfaces/local/lib/python3*/dist-packages; do
  [ -d "$_d" ] && _vla_py="$_d"
done
# vla_ros's own install: its metadata is what the installed entry points (install/vla_ros/lib/vla_ros/*,
# run by `ros2 run` and `ros2 launch`) look up; without it they die with PackageNotFoundError.
for _d in "$_vla_root"/install/vla_ros/lib/python3*/site-packages "$_vla_root"/install/vla_ros/local/lib/python3*/dist-packages; do
  [ -d "$_d" ] && _vla_py="${_vla_py:+$_vla_py:}$_d"
done
# The source tree comes first so edits take effect without a rebuild.
export PYTHONPATH="$_vla_root:$_vla_py${PYTHONPATH:+:$PYTHONPATH}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export MUJOCO_GL="${MUJOCO_GL:-osmesa}"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
unset _vla_root _vla_venv _vla_site _vla_libs _vla_py _d
