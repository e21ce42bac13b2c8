"""The one `main()` body every node shares: init, spin, refuse to start with a reason, clean up."""

from __future__ import annotations

import logging
import signal
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from vla_ros.errors import VlaRosError


def run_node(name: str, make_node: Callable[[], Node], make_executor: Callable[[], Executor],
             args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = make_executor()
        executor.add_node(node)
        executor.spin()
    except VlaRosError as err:  # refuse to start with the reason, not a traceback
        logging.getLogger(name).error(f"{name} cannot start: {err}")
        raise SystemExit(1) from err
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A signal shut the context down under a waiting executor thread (rclpy raises RCLError
        # then): a normal exit; `finally` still runs the node's clean-up (the recorder finalises).
    finally:
        # A terminal's Ctrl-C reaches a launched node twice (terminal and launch): the second must
        # not interrupt clean-up, which is where the recorder finalises its episode.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
