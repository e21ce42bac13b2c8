"""Shared fixtures: real rclpy over real DDS, isolated per test process.

Each pytest process gets its own ROS_DOMAIN_ID (no cross-talk between parallel runs) and
localhost-only discovery; each test gets a private rclpy Context with a multi-threaded
executor spinning in the background, torn down (nodes destroyed, context shut down) after.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import pytest

# Before anything imports rclpy: isolate this run's DDS traffic.
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` until true; the timeout is the failure (never a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class RosHarness:
    """A private rclpy context and a background executor; nodes added here are cleaned up."""

    def __init__(self) -> None:
        import rclpy
        from vla_ros.ros.executor import MultiThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        self.executor = MultiThreadedExecutor(num_threads=6, context=self.context)
        self._nodes = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except (ExternalShutdownException, RuntimeError):
            pass

    def add(self, node):
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str, setup=None):
        """A plain helper node (publishers, subscribers, clients for the test). setup(node) runs before the
        node joins the spinning executor: rclpy's ActionClient registers itself with its node before it has
        its lock, so one created on a node already being spun can crash the spin thread."""
        import rclpy

        node = rclpy.create_node(name, context=self.context)
        if setup is not None:
            setup(node)
        return self.add(node)

    def shutdown(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        for node in self._nodes:
            node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


@pytest.fixture
def ros():
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.shutdown()
