"""RecorderConfig: defaults, parallel camera lists, ROS-style flat parameters, mapping to the writer."""

from __future__ import annotations

import pytest

from vla_ros.config.recorder import RecorderConfig
from vla_ros.config.schema import from_flat, iter_fields
from vla_ros.errors import ConfigError
from vla_ros.recording import CameraSpec, DatasetSpec, spec_from_config


def test_defaults_are_valid_and_map_to_the_writer():
    cfg = RecorderConfig()
    spec = spec_from_config(cfg)
    assert isinstance(spec, DatasetSpec) and spec.fps == 30
    assert [(c.key, c.height_px, c.width_px) for c in spec.cameras] == [("front", 240, 320)]
    assert cfg.video.codec == "h264" and cfg.min_free_disk_mb == 2048 and not cfg.record_mcap
    names = {f.name for f in iter_fields(RecorderConfig)}
    assert {"video.codec", "max_skew_s", "queue_size_frames", "toggle_topic", "intervention_topic"} <= names


def test_flat_parameters_build_a_two_camera_config():
    cfg = from_flat(RecorderConfig, {"camera_topics": ["/a/image", "/b/image/compressed"],
                                     "camera_keys": ["top", "wrist"], "camera_heights_px": [480, 240],
                                     "camera_widths_px": [640, 320], "video.codec": "mpeg4", "fps": 15})
    spec = spec_from_config(cfg)
    assert [c.feature for c in spec.cameras] == ["observation.images.top", "observation.images.wrist"]
    assert cfg.video.codec == "mpeg4"


@pytest.mark.parametrize("changes, message", [
    ({"camera_keys": ["front", "wrist"]}, "camera_keys: has 2 entries but camera_topics has 1"),
    ({"camera_keys": ["front cam"]}, "may only use letters, digits and _"),
    ({"joint_names": ["a", "a"]}, "joint_names: must be non-empty, unique"),
    ({"action_names": []}, "action_names: must be non-empty"),
    ({"video.codec": "vp9"}, "'vp9' is not one of"),
    ({"fps": 0}, "fps: 0 is outside the allowed range"),
    ({"dataset_root": ""}, "dataset_root: must name a directory"),
    ({"command_topic": ""}, "both are required"),
    ({"mcap_topics": ["/tf"]}, r"mcap_topics: \['/tf'\] are not recorder inputs"),
])
def test_bad_values_are_refused_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        from_flat(RecorderConfig, changes)


def test_odd_image_size_is_refused():
    with pytest.raises(ConfigError, match=r"\[\('front', 241, 320\)\] \(key, height, width\) must be even"):
        from_flat(RecorderConfig, {"camera_heights_px": [241]})
    with pytest.raises(ConfigError, match="must be positive and even"):
        DatasetSpec("arm", 30, ("a",), ("a",), (CameraSpec("front", 241, 320),))
