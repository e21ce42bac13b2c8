"""MCAP per episode: raw CDR messages with ros2msg schemas, as `ros2 bag` and Foxglove read them.

The recorder node serialises messages itself (rclpy.serialization.serialize_message) so this layer
only moves bytes. A schema is the message's .msg text followed by every type it depends on, each
after a line of 80 '=' and a `MSG: pkg/Name` line (the rosbag2 MCAP convention), read from the
share/<pkg>/msg/*.msg files of the AMENT_PREFIX_PATH prefixes and of this Python environment.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from pathlib import Path
from typing import BinaryIO

from mcap.exceptions import McapError
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer

from vla_ros.errors import RecordingError

log = logging.getLogger(__name__)

PRIMITIVE_TYPES = frozenset({"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
                             "int32", "uint32", "int64", "uint64", "string", "wstring"})
_SEPARATOR = "=" * 80
_ARRAY_SUFFIX = re.compile(r"\[[^\]]*\]$")
_BOUNDED_STRING = re.compile(r"^(w?string)<=\d+$")


def _search_prefixes() -> list[Path]:
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(Path(sys.prefix))  # ROS message wheels install their share/ into the venv
    return prefixes


def _split_type_name(type_name: str) -> tuple[str, str]:
    """'sensor_msgs/msg/Image' or 'sensor_msgs/Image' -> ('sensor_msgs', 'Image')."""
    parts = type_name.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise RecordingError(f"message type {type_name!r}: expected pkg/msg/Name or pkg/Name")


def _msg_text(pkg: str, name: str, prefixes: tuple[Path, ...]) -> str:
    for prefix in prefixes:
        path = prefix / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text()
    raise RecordingError(f"no {pkg}/msg/{name}.msg under share/ of {[str(p) for p in prefixes]} "
                         "(is the package installed and AMENT_PREFIX_PATH set?)")


def _field_types(text: str, pkg: str) -> list[tuple[str, str]]:
    """Non-primitive (pkg, Name) types the fields of a .msg text use, in order."""
    deps = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 2 or "=" in tokens[1]:
            continue  # constants are primitives
        base = _ARRAY_SUFFIX.sub("", tokens[0])
        if base in PRIMITIVE_TYPES or _BOUNDED_STRING.match(base):
            continue
        if "/" in base:
            dep_pkg, dep_name = _split_type_name(base)
        elif base == "Header":
            dep_pkg, dep_name = "std_msgs", "Header"
        else:
            dep_pkg, dep_name = pkg, base
        deps.append((dep_pkg, dep_name))
    return deps


def ros2msg_definition(type_name: str, search_prefixes: list[Path] | None = None) -> str:
    """Full ros2msg schema text of a message type such as 'sensor_msgs/msg/Image'."""
    prefixes = tuple(search_prefixes) if search_prefixes is not None else tuple(_search_prefixes())
    return _definition(type_name, prefixes)


@functools.lru_cache(maxsize=256)
def _definition(type_name: str, prefixes: tuple[Path, ...]) -> str:
    pkg, name = _split_type_name(type_name)
    main = _msg_text(pkg, name, prefixes)
    parts = [main.rstrip("\n")]
    seen = {(pkg, name)}
    pending = _field_types(main, pkg)
    while pending:
        dep = pending.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        text = _msg_text(dep[0], dep[1], prefixes)
        parts.append(f"{_SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{text.rstrip(chr(10))}")
        pending.extend(_field_types(text, dep[0]))
    return "\n".join(parts) + "\n"


class McapEpisodeWriter:
    """One MCAP file of raw CDR messages; channels and schemas registered on first use."""

    def __init__(self, path: Path, search_prefixes: list[Path] | None = None) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "wb")
        self._writer = Writer(self._file, chunk_size=1 << 20, compression=CompressionType.LZ4)
        self._writer.start(profile="ros2", library="vla_ros")
        self._prefixes = search_prefixes
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._sequence = 0
        self.messages = 0

    def _schema_id(self, type_name: str, definition: str | None) -> int:
        if type_name not in self._schemas:
            text = definition if definition is not None else ros2msg_definition(type_name, self._prefixes)
            self._schemas[type_name] = self._writer.register_schema(type_name, "ros2msg", text.encode())
        return self._schemas[type_name]

    def write(self, topic: str, type_name: str, cdr: bytes, log_time_ns: int, *,
              publish_time_ns: int | None = None, definition: str | None = None) -> None:
        """Raises RecordingError when the type's .msg files cannot be found."""
        channel = self._channels.get(topic)
        if channel is None:
            schema = self._schema_id(type_name, definition)
            channel = self._writer.register_channel(topic, "cdr", schema)
            self._channels[topic] = channel
        self._writer.add_message(channel, log_time_ns, cdr,
                                 publish_time_ns if publish_time_ns is not None else log_time_ns,
                                 sequence=self._sequence)
        self._sequence += 1
        self.messages += 1

    def flush(self) -> None:
        """Close the open chunk and hand everything to the OS: a process killed after this loses
        nothing written before it, however few messages the chunk held (mcap's Writer.flush)."""
        self._writer.flush()

    def close(self) -> None:
        try:
            self._writer.finish()
        finally:
            self._file.close()


def salvage_mcap(src: Path, dst: Path) -> int:
    """Copy every readable message of a possibly truncated MCAP into a complete one; returns the count."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    out_file = open(dst, "wb")
    writer = Writer(out_file, chunk_size=1 << 20, compression=CompressionType.LZ4)
    writer.start(profile="ros2", library="vla_ros")
    schema_map: dict[int, int] = {}
    channel_map: dict[int, int] = {}
    count = 0
    try:
        with open(src, "rb") as f:
            try:
                for record in StreamReader(f, skip_magic=False).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                    elif isinstance(record, Message) and record.channel_id in channels:
                        ch = channels[record.channel_id]
                        if ch.id not in channel_map:
                            sc = schemas.get(ch.schema_id)
                            if sc is None:
                                continue
                            if sc.id not in schema_map:
                                schema_map[sc.id] = writer.register_schema(sc.name, sc.encoding, sc.data)
                            channel_map[ch.id] = writer.register_channel(ch.topic, ch.message_encoding,
                                                                         schema_map[sc.id], ch.metadata)
                        writer.add_message(channel_map[ch.id], record.log_time, record.data,
                                           record.publish_time, record.sequence)
                        count += 1
            except (McapError, EOFError, ValueError, OSError) as err:  # truncated tail
                log.info("MCAP %s ends in an unreadable part after %d messages: %s", src, count, err)
    finally:
        writer.finish()
        out_file.close()
    return count
