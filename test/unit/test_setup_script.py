"""scripts/setup.sh picks and records its Python, run on a copy with fake interpreters (no venv is built).

Each fake answers the version query setup.sh asks and fails at pip, so every run stops before a
package would be installed; the assertions are about what happened up to there.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

FAKE = """#!/bin/sh
case "$1" in
  -c) case "$2" in *version_info*) echo {version};; *_base_executable*) echo "$0";; esac; exit {rc};;
  -m) [ "$2" = venv ] && mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0;;
esac
exit 3
"""


def _fake_python(path: Path, version: str, rc: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE.format(version=version, rc=rc))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")
    return root


def _setup(root: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VLA_ROS_")}
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh")], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def _venv_of(root: Path, version: str, torch: str) -> None:
    _fake_python(root / ".venv" / "bin" / "python", version)
    (root / ".venv" / ".vla_ros_env").write_text(f"python={version}\ntorch={torch}\n")
    for stale in ("install", "build"):
        (root / stale).mkdir()
        (root / stale / "built_for").write_text(version)


def test_unsupported_or_broken_interpreter_is_refused_naming_the_versions(tmp_path):
    """Catches: any interpreter accepted and colcon failing later on paths of another CPython, or a
    pyenv shim of an inactive version (on PATH but it does not run) taken for a Python."""
    root = _tree(tmp_path)
    for fake, said in ((_fake_python(tmp_path / "py313", "3.13"), "is CPython 3.13, not"),
                       (_fake_python(tmp_path / "shim", "3.12", rc=127), "is not a working CPython")):
        run = _setup(root, VLA_ROS_PYTHON=str(fake))
        assert run.returncode == 1
        assert said in run.stderr and "3.11 or 3.12" in run.stderr, run.stderr
        assert not (root / ".venv").exists()


def test_another_python_rebuilds_venv_build_and_install(tmp_path):
    """Catches: a 3.12 venv reusing install/ built for 3.11 (its extension modules do not import)."""
    root = _tree(tmp_path)
    _venv_of(root, "3.11", "requirements")
    run = _setup(root, VLA_ROS_PYTHON=str(_fake_python(tmp_path / "py312", "3.12")), VLA_ROS_TORCH="none")
    assert "switching to CPython 3.12" in run.stdout, run.stdout + run.stderr
    assert not (root / "install").exists() and not (root / "build").exists()
    assert (root / ".venv" / ".vla_ros_env").read_text().startswith("python=3.12\ntorch=none\n")


def test_unset_variables_keep_the_venvs_python_and_torch(tmp_path):
    """Catches: a plain `bash scripts/setup.sh` after VLA_ROS_TORCH=none switching back to torch from
    requirements.txt, which pulls PyPI's CUDA build (about 2.7 GB) where no CPU wheel is local."""
    root = _tree(tmp_path)
    _venv_of(root, "3.12", "none")
    run = _setup(root)
    assert "switching" not in run.stdout, run.stdout
    assert (root / "install" / "built_for").read_text() == "3.12"
    assert (root / ".venv" / ".vla_ros_env").read_text().startswith("python=3.12\ntorch=none\n")
