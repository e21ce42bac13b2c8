"""The import contracts in .importlinter hold: layers import only downwards, pure cores never import ROS,
control/ never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    """Kills: a pure core (model, control, recording, sim, training, config) importing rclpy or a message
    package, directly or through another module; control/ importing torch; a lower layer importing a higher
    one (e.g. model importing vla_ros.ros, ros importing an app) or two siblings importing each other."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([str(lint_imports), "--config", str(REPO / ".importlinter"), "--no-cache"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout
