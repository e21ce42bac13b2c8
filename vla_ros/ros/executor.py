"""A MultiThreadedExecutor without the busy loop of ros2/rclpy#1452.

In the rclpy of the Kilted wheels, every wait yields again each task that was handed to the thread
pool but has not started yet, and returns at once while one exists. The spin thread then re-submits
that task in a tight loop, holding the GIL, so the workers that should run it barely get to: a node
with steady traffic burns a core and falls behind (measured: recorder_node at 90 % CPU dropping
joint states, so half its frames were flagged stale). Upstream fixed it in rclpy#1547, after the
wheels were built. Here a task whose last submission has not started is not submitted again;
the spin thread waits for a worker to pick it up instead.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from rclpy.executors import (ConditionReachedException, ExternalShutdownException, ShutdownException,
                             TimeoutException)
from rclpy.executors import MultiThreadedExecutor as _RclpyMultiThreadedExecutor

QUEUED_TASK_WAIT_S = 0.01  # longest the spin thread waits for a worker to start a queued task


class MultiThreadedExecutor(_RclpyMultiThreadedExecutor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool = getattr(self, "_executor", None)
        if not (isinstance(getattr(self, "_futures", None), list) and hasattr(pool, "submit")):
            raise RuntimeError("vla_ros.ros.executor relies on rclpy's MultiThreadedExecutor internals (_futures, "
                               "_executor), which this rclpy lacks; use rclpy.executors.MultiThreadedExecutor")
        self._started: dict[Any, threading.Event] = {}  # task -> set once a worker began its last submission
        self._started_lock = threading.Lock()

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        with self._started_lock:
            started = self._started.get(handler)
            if started is not None and not started.is_set():
                queued = started
            else:
                queued = None
                started = self._started[handler] = threading.Event()
        if queued is not None:  # still in the pool's queue: let a worker take it
            queued.wait(QUEUED_TASK_WAIT_S)
            return
        self._futures.append(handler)
        self._executor.submit(self._run, handler, started)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                with self._started_lock:
                    self._started.pop(future, None)
                future.result()  # raise any exceptions

    @staticmethod
    def _run(handler: Callable[[], None], started: threading.Event) -> None:
        started.set()
        handler()
