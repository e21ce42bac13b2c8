"""MCAP per episode: schema text from installed .msg files, raw CDR from rclpy, mcap readers, salvage."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as Ros2DictWriter

from test.unit.test_recording_writer import BASE_NS, NS, feed, make_spec, options
from vla_ros.errors import RecordingError
from vla_ros.recording import DatasetWriter, LeRobotDatasetReader, McapEpisodeWriter, ros2msg_definition, salvage_mcap
from vla_ros.recording import validate_dataset

REPO = Path(__file__).resolve().parents[2]
serialization = pytest.importorskip("rclpy.serialization")
sensor_msgs = pytest.importorskip("sensor_msgs.msg")


def read_mcap(path: Path) -> tuple[dict[str, int], list[tuple[str, object]]]:
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        counts = {ch.topic: summary.statistics.channel_message_counts.get(cid, 0)
                  for cid, ch in summary.channels.items()}
        decoded = [(channel.topic, msg) for _, channel, _, msg in reader.iter_decoded_messages()]
    return counts, decoded


def joint_state(i: int) -> bytes:
    m = sensor_msgs.JointState()
    m.header.stamp.sec, m.header.frame_id = i, "base"
    m.name, m.position = ["j1", "j2", "j3"], [float(i), 0.5, -1.0]
    return serialization.serialize_message(m)


def image_msg(i: int, h: int = 4, w: int = 6) -> bytes:
    m = sensor_msgs.Image()
    m.height, m.width, m.encoding, m.step = h, w, "rgb8", w * 3
    m.data = bytes([i % 256]) * (h * w * 3)
    return serialization.serialize_message(m)


def test_definition_concatenates_dependencies_in_ros2msg_format():
    text = ros2msg_definition("sensor_msgs/msg/JointState")
    sections = text.split("=" * 80 + "\n")
    assert "float64[] position" in sections[0] and "MSG:" not in sections[0]
    assert [s.splitlines()[0] for s in sections[1:]] == ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time"]
    with pytest.raises(RecordingError, match="no nope_msgs/msg/Thing.msg"):
        ros2msg_definition("nope_msgs/msg/Thing")
    with pytest.raises(RecordingError, match="expected pkg/msg/Name"):
        ros2msg_definition("JointState")


def test_definition_of_our_action_chunk_round_trips_through_an_independent_encoder(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "share" / "vla_ros_interfaces" / "msg").mkdir(parents=True)
    shutil.copy(REPO / "vla_ros_interfaces" / "msg" / "ActionChunk.msg",
                prefix / "share" / "vla_ros_interfaces" / "msg" / "ActionChunk.msg")
    text = ros2msg_definition("vla_ros_interfaces/msg/ActionChunk", [prefix, Path(sys.prefix)])
    assert "MSG: std_msgs/Header" in text
    buf = io.BytesIO()
    writer = Ros2DictWriter(buf)
    schema = writer.register_msgdef("vla_ros_interfaces/msg/ActionChunk", text)
    msg = {"header": {"stamp": {"sec": 3, "nanosec": 7}, "frame_id": ""}, "chunk_id": 42,
           "action_space": "joint_position", "names": ["a", "b"], "horizon": 2, "dt": 0.1,
           "actions": [1.0, 2.0, 3.0, 4.0]}
    writer.write_message("/vla/action_chunk", schema, msg, log_time=1, publish_time=1)
    writer.finish()
    buf.seek(0)
    (_, _, _, decoded), = make_reader(buf, decoder_factories=[DecoderFactory()]).iter_decoded_messages()
    assert decoded.chunk_id == 42 and list(decoded.actions) == [1.0, 2.0, 3.0, 4.0]
    assert decoded.header.stamp.nanosec == 7


def test_episode_mcap_has_the_topics_message_counts_and_decodable_messages(tmp_path):
    w = DatasetWriter(tmp_path / "ds", make_spec(), options(record_mcap=True))
    assert not w.add_raw("/joint_states", "sensor_msgs/msg/JointState", joint_state(0), BASE_NS)  # not recording
    w.start_episode("pick", "teleop")
    feed(w, 10)
    for i in range(25):
        assert w.add_raw("/joint_states", "sensor_msgs/msg/JointState", joint_state(i), BASE_NS + i * NS // 50)
    for i in range(10):
        assert w.add_raw("/camera/image_raw", "sensor_msgs/msg/Image", image_msg(i), BASE_NS + i * NS // 10)
    w.add_raw("/unknown", "nope_msgs/msg/Thing", b"\x00\x01\x00\x00", BASE_NS)  # counted, not fatal
    s = w.stop_episode()
    assert s.kept and s.mcap_path.endswith("mcap/chunk-000/episode_000000.mcap")
    assert s.report["mcap"]["messages"] == 35 and s.report["mcap"]["errors"] == {"/unknown": 1}
    counts, decoded = read_mcap(Path(s.mcap_path))
    assert counts == {"/joint_states": 25, "/camera/image_raw": 10}
    js = [m for topic, m in decoded if topic == "/joint_states"]
    assert [m.position[0] for m in js] == [float(i) for i in range(25)] and js[3].name == ["j1", "j2", "j3"]
    images = [m for topic, m in decoded if topic == "/camera/image_raw"]
    assert images[4].encoding == "rgb8" and images[4].data[:3] == bytes([4, 4, 4])
    assert LeRobotDatasetReader(tmp_path / "ds").episodes[0].row["mcap_path"] == "mcap/chunk-000/episode_000000.mcap"
    assert validate_dataset(tmp_path / "ds").ok


def test_salvage_keeps_every_message_flushed_before_the_cut(tmp_path):
    """Bug it catches: flush() only flushed the file, so messages sat in the open 1 MB chunk and a
    kill -9 of a low-rate recording (joint states alone) lost every one of them."""
    path = tmp_path / "live.mcap"
    writer = McapEpisodeWriter(path)
    for i in range(5):  # a few hundred bytes: far from filling a chunk
        writer.write("/joint_states", "sensor_msgs/msg/JointState", joint_state(i), BASE_NS + i)
    writer.flush()
    early = tmp_path / "killed_early.mcap"
    shutil.copy(path, early)  # a kill -9 right after the flush
    for i in range(40):  # ~100 kB each: a 1 MB chunk closes by size after ~10 of them
        writer.write("/camera/image_raw", "sensor_msgs/msg/Image", image_msg(i, 120, 280), BASE_NS + 10 + i)
    writer.write("/joint_states", "sensor_msgs/msg/JointState", joint_state(99), BASE_NS + 99)  # never flushed
    cut = tmp_path / "killed.mcap"
    shutil.copy(path, cut)  # what a SIGKILL leaves: closed chunks on disk, no summary, no footer
    writer.close()
    with open(cut, "rb") as f, pytest.raises(McapError):  # an ordinary reader cannot open it
        make_reader(f).get_summary()
    assert salvage_mcap(early, tmp_path / "early.mcap") == 5
    assert read_mcap(tmp_path / "early.mcap")[0] == {"/joint_states": 5}
    out = tmp_path / "salvaged.mcap"
    n = salvage_mcap(cut, out)
    counts, decoded = read_mcap(out)
    assert counts["/joint_states"] == 5  # everything before the flush
    assert 10 <= counts.get("/camera/image_raw", 0) < 40 and n == sum(counts.values())
    images = [m for topic, m in decoded if topic == "/camera/image_raw"]
    assert [m.data[0] for m in images] == list(range(len(images)))
    assert np.all([m.width == 280 for m in images])
