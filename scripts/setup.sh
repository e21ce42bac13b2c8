#!/usr/bin/env bash
# Idempotent setup: .venv with ROS 2 (PyPI wheels), torch and the rest, then colcon builds
# vla_ros_interfaces and vla_ros into install/. A second run with nothing changed takes seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PYTHON="${VLA_ROS_PYTHON:-python3.11}"

log() { printf '[setup] %s\n' "$*"; }
trap 'echo "[setup] failed at line $LINENO: $BASH_COMMAND" >&2' ERR

if ! command -v "$PYTHON" >/dev/null; then
  echo "[setup] $PYTHON not found: the ROS 2 Kilted wheels need CPython 3.11 (set VLA_ROS_PYTHON)" >&2
  exit 1
fi

# 1. The venv and its packages, reinstalled only when requirements.txt changes.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
req_hash="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]; then
  log "installing requirements (about a minute)"
  # The bootstrapper wheel re-executes python to set LD_LIBRARY_PATH; pip does not need it.
  # (grep drops the noise of pip.conf entries that point at absent local indexes)
  _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  echo "$req_hash" > "$VENV/.requirements.sha256"
fi

# 2. The message wheels' CMake exports name the wheel builder's include paths
#    (/opt/python/cp311-cp311/...). Point them at this venv's Python and numpy headers,
#    editing the venv's own files so no root is needed.
py_include="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
mapfile -t stale < <(grep -rl --include='*.cmake' '/opt/python/cp311-cp311/' "$VENV" 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
  log "repointing ${#stale[@]} CMake export files at $py_include and $np_include"
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_include}#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" "${stale[@]}"
fi

# 3. MuJoCo renders headless through OSMesa (Debian package libosmesa6).
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libosmesa6 for headless MuJoCo rendering"
    (apt-get install -y -qq libosmesa6 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libosmesa6 >/dev/null; })
  else
    log "WARNING: libOSMesa not found; the simulated camera needs it (apt-get install libosmesa6)"
  fi
fi

# 3b. The two-host tests drop packets with iptables (random loss; this kernel has no netem).
if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null && command -v apt-get >/dev/null; then
  log "installing iptables for the two-host lossy-link test"
  (apt-get install -y -qq iptables >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq iptables >/dev/null; }) \
    || log "WARNING: iptables could not be installed; the lossy-link test will skip"
fi

# 4. colcon builds both packages (colcon does not look inside a package folder, so name both).
build_hash="$({ find package.xml setup.py setup.cfg vla_ros_interfaces launch config models -type f 2>/dev/null || true; } \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [ "$(cat install/.build.sha256 2>/dev/null)" != "$build_hash" ]; then
  log "building vla_ros_interfaces and vla_ros with colcon"
  mkdir -p build
  (
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
    export PATH="$VENV/bin:$PATH"
    export LD_LIBRARY_PATH="$VENV/lib:${LD_LIBRARY_PATH:-}"
    colcon --log-base build/log build --base-paths . vla_ros_interfaces --build-base build --install-base install \
      --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
      --event-handlers console_direct- > build/colcon.log 2>&1 \
      || { tail -40 build/colcon.log >&2; echo "[setup] colcon build failed (full log: build/colcon.log)" >&2; exit 1; }
  )
  echo "$build_hash" > install/.build.sha256
fi
log "ready (activate with: source scripts/env.sh)"
