"""Start ROS nodes as child processes and always take them down again (no process left behind)."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


POLICY_ENV_VAR = "VLA_ROS_POLICY_ENV"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child only makes the call


def _stop_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM (a node's clean shutdown) when the thread
    that started it dies, even by SIGKILL, so a killed app leaves no node behind. NodeProcesses.start is called
    from the app's main thread; the child does one foreign call and no allocation-heavy Python (preexec_fn
    runs between fork and exec, where other threads' locks may be held)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def node_command(node: str, env: dict[str, str]) -> list[str]:
    """The interpreter that runs `node`: this one, or for policy_node the one of another set-up checkout.

    VLA_ROS_POLICY_ENV=DIR runs policy_node with DIR/scripts/env.sh sourced: its venv's Python and torch.
    CI's Python 3.12 run uses it where no CPU build of torch exists for that Python (README, "Python versions").
    """
    other = env.get(POLICY_ENV_VAR, "") if node == "policy_node" else ""
    if not other:
        return [sys.executable]
    env_sh = Path(other).resolve() / "scripts" / "env.sh"
    if not env_sh.is_file():
        raise FileNotFoundError(f"{POLICY_ENV_VAR}={other}: no {env_sh}")
    # Without this interpreter's paths: the other checkout's env.sh sets them for its own Python.
    return ["env", "-u", "PYTHONPATH", "-u", "LD_LIBRARY_PATH", "-u", "AMENT_PREFIX_PATH",
            "bash", "-c", 'source "$0" && exec python "$@"', str(env_sh)]


class NodeProcesses:
    """`python -m vla_ros.ros.<node>` children, each in its own process group, logs to files.

    Each log starts with the command line, so a log says which interpreter ran the node.
    Use as a context manager: on exit every child gets SIGINT (clean shutdown: the recorder
    finalises its episode), then SIGTERM, then SIGKILL, and is waited for.
    """

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.children: dict[str, subprocess.Popen] = {}
        self._previous_sigterm: object = None  # the app's SIGTERM handler while ours is installed

    def start(self, node: str, params_file: Path | None = None, params: dict | None = None,
              prefix: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`prefix` runs the node through another program (e.g. `ip netns exec NS` for another
        host; it must exec the node, so signals reach it); `env` replaces this set's environment."""
        env = self.env if env is None else env
        if self._previous_sigterm is None and threading.current_thread() is threading.main_thread():
            # SIGTERM (kill, systemd, a job scheduler) then ends the app the way Ctrl-C does: its context
            # managers unwind and stop() gives every node its SIGINT, so the recorder finalises its episode.
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_system_exit)
        cmd = [*(prefix or []), *node_command(node, env), "-m", f"vla_ros.ros.{node}", "--ros-args"]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        for name, value in (params or {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            cmd += ["-p", f"{name}:={text}"]
        log = open(self.log_dir / f"{node}.log", "w")
        log.write(f"# {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=_stop_with_parent)
        log.close()
        self.children[node] = proc
        return proc

    def failed(self) -> dict[str, int]:
        """{node: exit code} for children that have already exited."""
        return {n: p.returncode for n, p in self.children.items() if p.poll() is not None}

    def log_tail(self, node: str, lines: int = 20) -> str:
        path = self.log_dir / f"{node}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            self._signal_children(timeout_s)
        finally:
            if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._previous_sigterm)
                self._previous_sigterm = None

    def _signal_children(self, timeout_s: float) -> None:
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            alive = [p for p in self.children.values() if p.poll() is None]
            if not alive:
                return
            for proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            for proc in alive:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass

    def __enter__(self) -> "NodeProcesses":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
