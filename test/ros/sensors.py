"""A background publisher of camera images and joint states for node tests."""

from __future__ import annotations

import threading

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from vla_ros.config.policy import DEFAULT_JOINTS
from vla_ros.ros import convert


class SensorPublisher:
    """Publishes /camera/image_raw and /joint_states at `rate_hz` until stopped.

    The fields can be changed while it runs (positions, joint names, encoding, size, which
    streams are on) to produce the bad inputs the tests need.
    """

    def __init__(self, node, rate_hz: float = 30.0, image_topic: str = "/camera/image_raw") -> None:
        self.node = node
        self.image_pub = node.create_publisher(Image, image_topic, qos_profile_sensor_data)
        self.joint_pub = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.joint_names = list(DEFAULT_JOINTS)
        self.positions = np.linspace(-0.3, 0.3, len(self.joint_names))
        self.size_hw = (240, 320)
        self.encoding = "rgb8"
        self.publish_images = True
        self.publish_joints = True
        self.last_stamp_ns = 0
        self._period = 1.0 / rate_hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            stamp_ns = self.node.get_clock().now().nanoseconds
            if self.publish_images:
                h, w = self.size_hw
                rgb = np.full((h, w, 3), 128, dtype=np.uint8)
                msg = convert.rgb_to_image(rgb, stamp_ns)
                if self.encoding != "rgb8":
                    msg.encoding = self.encoding
                self.image_pub.publish(msg)
            if self.publish_joints:
                self.joint_pub.publish(convert.make_joint_state(tuple(self.joint_names), self.positions, stamp_ns))
            self.last_stamp_ns = stamp_ns
