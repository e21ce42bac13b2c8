"""vla_ros.ros.executor: a callback queued behind a busy worker is submitted once, not once per wait
(the rclpy#1452 busy loop that made recorder_node drop joint states), and still runs."""

from __future__ import annotations

import os
import threading

import pytest
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from std_msgs.msg import String

from test.conftest import wait_for
from vla_ros.ros.executor import MultiThreadedExecutor


@pytest.mark.filterwarnings("ignore:MultiThreadedExecutor is used with a single thread")
def test_a_queued_callback_is_submitted_once_and_runs() -> None:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    executor = MultiThreadedExecutor(num_threads=1, context=context)  # one worker: easy to keep busy
    node = rclpy.create_node("executor_probe", context=context)
    release, blocking_started = threading.Event(), threading.Event()
    received: list[str] = []
    submitted: list[object] = []
    pool_submit = executor._executor.submit

    def counting_submit(fn, *args):
        submitted.append(args[0] if args else fn)
        return pool_submit(fn, *args)

    executor._executor.submit = counting_submit
    try:
        group = ReentrantCallbackGroup()

        def block(msg: String) -> None:
            blocking_started.set()
            release.wait(30.0)

        node.create_subscription(String, "/probe/block", block, 10, callback_group=group)
        node.create_subscription(String, "/probe/queued", lambda m: received.append(m.data), 10, callback_group=group)
        publisher_block = node.create_publisher(String, "/probe/block", 10)
        publisher_queued = node.create_publisher(String, "/probe/queued", 10)
        executor.add_node(node)
        wait_for(lambda: publisher_block.get_subscription_count() == 1 == publisher_queued.get_subscription_count(),
                 10.0, "the probe subscriptions to match")

        publisher_block.publish(String(data="block"))
        while not blocking_started.is_set():
            executor.spin_once(timeout_sec=0.1)
        publisher_queued.publish(String(data="queued"))
        for _ in range(30):  # the worker is busy: the second callback waits in the pool's queue
            executor.spin_once(timeout_sec=0.02)
        queued_task = submitted[-1]
        assert submitted.count(queued_task) == 1, f"queued callback submitted {submitted.count(queued_task)} times"
        assert received == []

        release.set()
        deadline_spins = 500
        while not received and deadline_spins:
            executor.spin_once(timeout_sec=0.02)
            deadline_spins -= 1
        assert received == ["queued"]
        assert submitted.count(queued_task) == 1
    finally:
        release.set()
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        context.try_shutdown()
