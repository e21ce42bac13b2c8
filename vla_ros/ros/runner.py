"""The one `main()` body every node shares: start, spin, stop on the first signal, clean up.

Stopping: the first SIGINT or SIGTERM ends the spin loop (every wait has a timeout of
SPIN_TIMEOUT_S, so it is noticed at once whatever rcl_wait is doing); a node with a
`begin_shutdown()` then gets up to WIND_DOWN_S with the executor still spinning to wind down (a
running goal ends ABORTED "node shutting down" and its result reaches the client; the recorder
finalises its episode), then the node is destroyed and the context shut down. Work still running
after STOP_WITHIN_S (a very long finalisation) is abandoned: the process ends with os._exit
(everything the nodes write is crash-safe, so the next start completes it). The second signal is
ignored: a terminal's Ctrl-C reaches a launched node twice (terminal and launch) and must not cut
the clean-up short; a third means the stop is stuck and ends the process at once (exit code 3).

Starting: a signal while the node is still being built (a model loading) abandons the start at
once; a VlaRosError while building (bad parameter, checkpoint mismatch, dataset of another layout)
is one line on stderr and exit code 1, no traceback; any other exception is a bug: its traceback
and exit code 2.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from vla_ros.errors import VlaRosError

SPIN_TIMEOUT_S = 0.1  # longest the spin thread waits in rcl_wait before looking at the stop flag
WIND_DOWN_S = 1.2  # a node's begin_shutdown() gets this long, the executor still spinning
STOP_WITHIN_S = 1.8  # from the signal to the process exit, whatever is still running
EXIT_REFUSED = 1
EXIT_CRASHED = 2
EXIT_STUCK = 3


class _StopSignal:
    """SIGINT/SIGTERM handler: the first one sets the flag (and interrupts a start in progress)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.time = 0.0
        self.started = False  # the node is built and spinning: stop through the flag only
        self.count = 0

    def __call__(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.count >= 3:  # launch escalates to SIGTERM only when the node is still up 5 s later: stuck
            os._exit(EXIT_STUCK)
        if self.event.is_set():
            return
        self.time = time.monotonic()
        self.event.set()
        if not self.started:
            raise KeyboardInterrupt


def run_node(name: str, make_node: Callable[[], Node], make_executor: Callable[[], Executor],
             args: list[str] | None = None) -> None:
    log = logging.getLogger(name)
    stop = _StopSignal()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    # rclpy's own handlers would shut the context down under running callbacks; ours stop in order.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: Node | None = None
    executor: Executor | None = None
    refused = crashed = False
    try:
        try:
            node = make_node()
        except VlaRosError as err:  # refuse to start with the reason, not a traceback
            print(f"{name} cannot start: {err}", file=sys.stderr, flush=True)
            refused = True
            return
        executor = make_executor()
        executor.add_node(node)
        stop.started = True
        if stop.event.is_set():  # a signal came while the node was being built
            return
        while not stop.event.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        _wind_down(node, executor, stop)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # a bug, not a refusal: the traceback is what a person needs
        traceback.print_exc()
        crashed = True
    finally:
        stop.event.set()  # from here on every signal is ignored
        _clean_up(log, node, executor)
        _exit(log, stop, EXIT_CRASHED if crashed else EXIT_REFUSED if refused else 0)


def _wind_down(node: Node, executor: Executor, stop: _StopSignal) -> None:
    begin = getattr(node, "begin_shutdown", None)
    if begin is None:
        return
    done = begin()
    deadline = (stop.time or time.monotonic()) + WIND_DOWN_S
    while not done() and time.monotonic() < deadline and rclpy.ok():
        executor.spin_once(timeout_sec=0.02)


def _clean_up(log: logging.Logger, node: Node | None, executor: Executor | None) -> None:
    """Destroy the node, stop the executor, shut the context down; a failure is one line, not a traceback."""
    steps: list[tuple[str, Callable[[], object]]] = []
    if node is not None:
        steps.append(("destroying the node", node.destroy_node))
    if executor is not None:
        if isinstance(executor, MultiThreadedExecutor):  # busy workers are waited for below, within the limit
            steps.append(("stopping the executor", lambda: executor.shutdown(timeout_sec=0.0, wait_for_threads=False)))
        else:
            steps.append(("stopping the executor", lambda: executor.shutdown(timeout_sec=0.0)))
    # rclpy.shutdown also destroys the nodes it knows: a node whose constructor raised is destroyed here.
    steps.append(("shutting ROS down", rclpy.try_shutdown))
    for what, step in steps:
        try:
            step()
        except Exception as err:  # noqa: BLE001 - report and go on: the other steps must still run
            log.error(f"while {what}: {type(err).__name__}: {err}")


def _exit(log: logging.Logger, stop: _StopSignal, code: int) -> None:
    """Wait for busy threads until the stop limit, then leave with os._exit.

    The node is destroyed and the context shut down by now; what os._exit skips is the interpreter's
    teardown, which took 5 s after an idle policy_node (torch and transformers modules), and the join
    of worker threads still busy. Whatever those threads write is crash-safe.
    """
    if stop.time:
        deadline = stop.time + STOP_WITHIN_S
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon
                and t is not threading.current_thread()]
        if busy:
            log.warning(f"stopping with work still running in {busy}; files in progress are completed at the "
                        "next start")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
