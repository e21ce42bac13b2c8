"""The freshness gate between sensor streams and the policy (numpy + stdlib, no ROS).

Sources are the cameras (by topic) and the joint state. Each keeps only its newest message;
a message stamped earlier than the one held is out of order and dropped (counted). An
Observation is built only when every source is younger than the maximum age, so a stale
image never becomes an action. Decoding happens at build time, off the subscription threads.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

import numpy as np

from vla_ros.errors import StaleObservationError
from vla_ros.types import Observation

JOINT_STATE_SOURCE = "joint_state"


@dataclasses.dataclass(frozen=True)
class _Held:
    stamp_ns: int
    payload: Any


class ObservationGate:
    def __init__(self, camera_sources: tuple[str, ...], joint_source_name: str = "/joint_states") -> None:
        self._cameras = tuple(camera_sources)
        self._joint_source_name = joint_source_name
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self.out_of_order_count = 0

    def offer(self, source: str, stamp_ns: int, payload: Any) -> bool:
        """Keep `payload` as the newest of `source`; False (and counted) when it is out of order."""
        with self._lock:
            held = self._held.get(source)
            if held is not None and stamp_ns < held.stamp_ns:
                self.out_of_order_count += 1
                return False
            self._held[source] = _Held(stamp_ns, payload)
            return True

    def _fresh(self, source: str, label: str, now_ns: int, max_age_s: float) -> _Held:
        held = self._held.get(source)
        if held is None:
            raise StaleObservationError(f"{label}: no message received yet")
        age_s = (now_ns - held.stamp_ns) * 1e-9
        if age_s > max_age_s:
            raise StaleObservationError(f"{label} stale (age {age_s:.2f} s > max {max_age_s:.2f} s)")
        if age_s < -max_age_s:
            raise StaleObservationError(f"{label} stamped {-age_s:.2f} s in the future (clock skew?)")
        return held

    def build(self, now_ns: int, max_age_s: float, instruction: str,
              decode_image: Callable[[str, Any], np.ndarray],
              decode_joints: Callable[[Any], np.ndarray]) -> Observation:
        """An Observation from the newest messages, or StaleObservationError naming the source.

        Decoders may raise ObservationError (bad encoding, NaN or missing joint): those are not
        stale, they propagate as they are. The observation's stamp is the oldest source stamp.
        """
        with self._lock:
            cams = [self._fresh(src, f"camera {src}", now_ns, max_age_s) for src in self._cameras]
            joints = self._fresh(JOINT_STATE_SOURCE, f"joint state {self._joint_source_name}", now_ns, max_age_s)
        images = tuple(decode_image(src, held.payload) for src, held in zip(self._cameras, cams))
        state = decode_joints(joints.payload)
        stamp_ns = min([joints.stamp_ns] + [c.stamp_ns for c in cams])
        return Observation(images=images, state=state, instruction=instruction, stamp_ns=stamp_ns)


def resize_frame(rgb: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """A camera frame at the policy's (height, width): the one resize rule of serving, training and evaluation.

    Area interpolation (cv2.INTER_AREA), the usual choice for shrinking; frames already that size pass as
    they are. policy_node, the trainer's dataset and the evaluation's AGVP pictures all call this, so a model
    never sees frames resized one way in training and another when it drives the robot.
    """
    if rgb.shape[:2] == (height_px, width_px):
        return rgb
    import cv2  # OpenCV only where a frame needs resizing

    return cv2.resize(rgb, (width_px, height_px), interpolation=cv2.INTER_AREA)
