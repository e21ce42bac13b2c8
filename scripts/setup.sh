#!/usr/bin/env bash
# Idempotent setup: .venv with ROS 2 (PyPI wheels), torch and the rest, then colcon builds
# vla_ros_interfaces and vla_ros into install/. A second run with nothing changed takes seconds.
#
#   VLA_ROS_PYTHON=python3.12   the interpreter (CPython 3.11 or 3.12); default: the venv's own,
#                               else python3.12, else python3.11 from PATH
#   VLA_ROS_TORCH=...           unset: as the venv was made, a new one takes torch from
#                               requirements.txt; "system": the interpreter's own
#                               torch (venv with --system-site-packages); "none": no torch (the nodes
#                               but policy_node run); anything else: a pip argument (a wheel file)
#   VLA_ROS_WHEELS=DIR          offline: install only the wheels in DIR (see docs/gpu_python312.md)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
SUPPORTED="3.11 3.12"  # the CPython versions the ROS 2 Kilted wheels on PyPI are built for
TORCH="${VLA_ROS_TORCH:-}"
TORCH_DEPENDENTS="peft|accelerate"  # requirements that pull torch in (left out with VLA_ROS_TORCH=none)

log() { printf '[setup] %s\n' "$*"; }
trap 'echo "[setup] failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# "X.Y" of an interpreter that actually runs (a pyenv shim of an inactive version does not).
py_version() {
  local v
  v="$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || return 1
  echo "$v"
}

# 0. The interpreter: VLA_ROS_PYTHON, else the one the venv was made with, else the newest supported.
venv_version="$(py_version "$VENV/bin/python" || true)"
if [ -n "${VLA_ROS_PYTHON:-}" ]; then
  candidates=("$VLA_ROS_PYTHON")
elif [ -n "$venv_version" ]; then
  candidates=("$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" -c 'import sys; print(sys._base_executable)')")
else
  candidates=(python3.12 python3.11)
fi
PYTHON="" PY_VERSION=""
for cand in "${candidates[@]}"; do
  version="$(py_version "$cand" || true)"
  if [ -n "$version" ] && [[ " $SUPPORTED " == *" $version "* ]]; then
    PYTHON="$(command -v "$cand")" PY_VERSION="$version"
    break
  fi
  if [ -n "${VLA_ROS_PYTHON:-}" ]; then
    echo "[setup] VLA_ROS_PYTHON=$VLA_ROS_PYTHON is ${version:+CPython $version, }not a working CPython" \
         "${SUPPORTED// / or }: the ROS 2 Kilted wheels exist for those only" >&2
    exit 1
  fi
done
if [ -z "$PYTHON" ]; then
  echo "[setup] no CPython ${SUPPORTED// / or } found (tried ${candidates[*]}): the ROS 2 Kilted wheels" \
       "exist for those only; install one (Ubuntu 24.04's python3.12 with python3.12-venv works)" \
       "or point VLA_ROS_PYTHON at one" >&2
  exit 1
fi
recorded_torch="$(sed -n 's/^torch=//p' "$VENV/.vla_ros_env" 2>/dev/null || true)"
case "$TORCH" in
  "") torch_mode="${recorded_torch:-requirements}" ;;  # unset: keep the venv's choice
  system|none) torch_mode="$TORCH" ;;
  *) torch_mode="pip:$TORCH" ;;
esac

# 1. The venv records its Python and torch source (.venv/.vla_ros_env); another one gets a clean
#    rebuild: venv, build/ and install/ (the colcon-built interfaces are compiled for one Python).
#    A venv from before the record is taken as CPython <its version> with torch from requirements.
want="python=$PY_VERSION
torch=$torch_mode"
have="$(grep -E '^(python|torch)=' "$VENV/.vla_ros_env" 2>/dev/null \
        || { [ -z "$venv_version" ] || printf 'python=%s\ntorch=requirements' "$venv_version"; })"
if [ -e "$VENV" ] && [ "$have" != "$want" ]; then
  log "switching to CPython $PY_VERSION ($PYTHON, torch: $torch_mode): removing .venv, build/ and install/"
  rm -rf "$VENV" "$ROOT/build" "$ROOT/install"
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with CPython $PY_VERSION ($PYTHON)"
  if [ "$torch_mode" = system ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
printf '%s\ninterpreter=%s\n' "$want" "$PYTHON" > "$VENV/.vla_ros_env"
vpy() { _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$VENV/bin/python" "$@"; }

# 2. Packages, reinstalled only when requirements.txt (or the offline wheel set) changes.
#    torch comes from requirements.txt unless VLA_ROS_TORCH says otherwise.
pip_install() {
  # The bootstrapper wheel re-executes python to set LD_LIBRARY_PATH; pip does not need it.
  # (grep drops the noise of pip.conf entries that point at absent local indexes)
  vpy -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
if [ -n "${VLA_ROS_WHEELS:-}" ]; then
  wheels=("$(cd "$VLA_ROS_WHEELS" && pwd)"/*.whl)
  req_hash="$( { echo "$torch_mode"; sha256sum "${wheels[@]}"; } | sha256sum | cut -d' ' -f1)"
elif [ "$torch_mode" = requirements ]; then
  req_hash="$(sha256sum requirements.txt | cut -d' ' -f1)"
else
  req_hash="$( { echo "$torch_mode"; cat requirements.txt; } | sha256sum | cut -d' ' -f1)"
fi
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]; then
  if [ -n "${VLA_ROS_WHEELS:-}" ]; then
    log "installing the ${#wheels[@]} wheels of $VLA_ROS_WHEELS (offline)"
    pip_install --no-index --no-deps "${wheels[@]}"
  else
    log "installing requirements (about a minute)"
    grep -v -E '^torch([<>=!~ ;[]|$)' requirements.txt > "$VENV/requirements-no-torch.txt"
    # Without torch, also leave out what requires it (peft): pip would fetch PyPI's torch for it, the
    # multi-GB CUDA build on Linux. LoRA training needs torch anyway.
    grep -v -E "^($TORCH_DEPENDENTS)([<>=!~ ;[]|\$)" "$VENV/requirements-no-torch.txt" > "$VENV/requirements-none.txt"
    case "$torch_mode" in
      requirements)
        vpy -m pip install -q --dry-run --no-deps --no-index "$(grep -E '^torch([<>=!~ ;[]|$)' requirements.txt)" \
            >/dev/null 2>&1 || log "NOTE: no local torch wheel for CPython $PY_VERSION: PyPI's is the CUDA build, about" \
            "2.7 GB with its nvidia-* wheels; VLA_ROS_TORCH=system (an installed torch) or =CPU_WHEEL avoids that"
        pip_install -r requirements.txt ;;
      system) pip_install -r "$VENV/requirements-no-torch.txt" ;;
      none) pip_install -r "$VENV/requirements-none.txt" ;;
      pip:*) pip_install -r "$VENV/requirements-no-torch.txt" "$TORCH" ;;
    esac
  fi
  echo "$req_hash" > "$VENV/.requirements.sha256"
fi
if [ "$torch_mode" = none ] && vpy -m pip show -q torch >/dev/null 2>&1; then
  echo "[setup] VLA_ROS_TORCH=none but torch got installed into $VENV (a requirement depends on it: add it" \
       "to TORCH_DEPENDENTS in scripts/setup.sh)" >&2
  exit 1
fi
if [ "$torch_mode" != none ]; then
  torch_version="$(vpy -c 'import torch; print(torch.__version__)' 2>/dev/null)" || {
    echo "[setup] torch does not import in $VENV (VLA_ROS_TORCH=${TORCH:-unset})" >&2; exit 1; }
  log "CPython $PY_VERSION, torch $torch_version"
else
  log "CPython $PY_VERSION, no torch (VLA_ROS_TORCH=none): policy_node and training cannot run here"
fi

# 3. The message wheels' CMake exports name the wheel builder's include paths
#    (/opt/python/cpXY-cpXY/include/pythonX.Y and its numpy's headers). Point them at this
#    venv's Python and numpy headers, editing the venv's own files so no root is needed.
py_include="$(vpy -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_include="$(vpy -c 'import numpy; print(numpy.get_include())')"
builder='/opt/python/cp3[0-9]+-cp3[0-9]+t?'
mapfile -t stale < <(grep -rlE --include='*.cmake' "$builder/" "$VENV" 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
  log "repointing ${#stale[@]} CMake export files at $py_include and $np_include"
  sed -i -E -e "s#$builder/lib/python3\.[0-9]+t?/site-packages/numpy/_core/include#${np_include}#g" \
            -e "s#$builder/include/python3\.[0-9]+t?#${py_include}#g" "${stale[@]}"
  left="$(grep -rhoE --include='*.cmake' "$builder/[^;\"]*" "$VENV" 2>/dev/null | sort -u | head -5 || true)"
  [ -z "$left" ] || log "WARNING: CMake exports still name paths this script does not know: $left"
fi

# 4. MuJoCo renders headless through OSMesa (Debian package libosmesa6).
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing libosmesa6 for headless MuJoCo rendering"
    (apt-get install -y -qq libosmesa6 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libosmesa6 >/dev/null; })
  else
    log "WARNING: libOSMesa not found; the simulated camera needs it (apt-get install libosmesa6)"
  fi
fi

# 4b. The two-host tests drop packets with iptables (random loss; this kernel has no netem).
if [ "$(id -u)" = 0 ] && ! command -v iptables >/dev/null && command -v apt-get >/dev/null; then
  log "installing iptables for the two-host lossy-link test"
  (apt-get install -y -qq iptables >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq iptables >/dev/null; }) \
    || log "WARNING: iptables could not be installed; the lossy-link test will skip"
fi

# 5. colcon builds both packages (colcon does not look inside a package folder, so name both).
#    The Python version is part of the hash: the interfaces' extension modules are built for it.
# (models/*/onnx/ is ONNX Runtime's export cache beside a checkpoint: not installed, not hashed)
build_hash="$({ echo "python=$PY_VERSION"; { find package.xml setup.py setup.cfg vla_ros_interfaces launch config models \
    -path 'models/*/onnx' -prune -o -type f -print 2>/dev/null || true; } \
  | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -d' ' -f1)"
if [ "$(cat install/.build.sha256 2>/dev/null)" != "$build_hash" ]; then
  if ! [ -x "$VENV/bin/colcon" ]; then
    echo "[setup] install/ is not built for CPython $PY_VERSION and this venv has no colcon" \
         "(offline wheels are runtime only: build install/ on a machine with the full requirements)" >&2
    exit 1
  fi
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
