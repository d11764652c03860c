"""rosbag2 recordings without ROS (rosbags): read camera images and labels, write images, both storages.

Reading tolerates what recordings on a car suffer: a recorder killed before it
wrote the MCAP summary or metadata.yaml (the complete records before the cut
are read, those of a cut chunk included), damaged MCAP chunks (skipped and
counted, reading goes on past them), damaged messages (skipped and counted), a
sqlite3 error half-way (what came before it is kept, the error is reported).
What is not a regular file or folder (a FIFO, a device) is refused at once.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SegNodeError, UsageError
from ..imaging import PNG_START, ImageDecodeError, decode_compressed_strictly, decode_raw, require_complete
from .mcap_repair import McapRepair, McapRepairError, repair_mcap

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGES = ("mcap", "sqlite3")
_STORAGE_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}
_LABEL_ENCODINGS = ("mono8", "8uc1")


class BagError(SegNodeError, RuntimeError):
    """A recording that cannot be read as asked."""


class BagReadError(BagError):
    """The bag is missing, empty, or so damaged that nothing in it can be read."""


class TopicNotFoundError(BagError, UsageError):
    """The asked topic is not in the bag; the message lists the topics that are (a usage error: exit 2)."""


class UnsupportedMessageError(BagError, UsageError):
    """A topic carries a message type the tool cannot turn into an image (a usage error: exit 2)."""


@lru_cache(maxsize=1)
def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def stamp_ns(message: Any) -> int:
    """The header stamp of a deserialized message in nanoseconds."""
    return int(message.header.stamp.sec) * 1_000_000_000 + int(message.header.stamp.nanosec)


def decode_image(message: Any, msgtype: str) -> tuple[np.ndarray, str]:
    """A deserialized Image or CompressedImage as uint8 HxWx3 and its colour order; ImageDecodeError when bad,
    damaged JPEGs that libjpeg still decodes included (``decode_compressed_strictly``)."""
    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed_strictly(message.data)
    if msgtype == IMAGE:
        return decode_raw(message.encoding, message.height, message.width, message.step, message.data)
    raise UnsupportedMessageError(f"{msgtype} is not an image; expected one of {', '.join(IMAGE_TYPES)}")


def decode_label(message: Any, msgtype: str) -> np.ndarray:
    """A label image (Image mono8/8UC1, or a PNG CompressedImage) as uint8 HxW class ids; ImageDecodeError for
    anything else, a JPEG above all (lossy: it changes class ids along every edge)."""
    if msgtype == IMAGE:
        if message.encoding.lower() not in _LABEL_ENCODINGS:
            raise ImageDecodeError(f"label encoding {message.encoding!r} is not one of {', '.join(_LABEL_ENCODINGS)}")
        if message.height <= 0 or message.width <= 0 or message.step < message.width:
            raise ImageDecodeError(f"label image of {message.width}x{message.height}, step {message.step}")
        data = np.asarray(message.data, dtype=np.uint8)
        if data.size < message.step * message.height:
            raise ImageDecodeError(f"label data holds {data.size} bytes, {message.step * message.height} expected")
        return data[: message.step * message.height].reshape(message.height, message.step)[:, : message.width]
    if msgtype == COMPRESSED_IMAGE:
        import cv2

        data = bytes(message.data)
        if not data.startswith(PNG_START):
            kind = "a JPEG (lossy)" if data.startswith(b"\xff\xd8") else f"not a PNG (format {message.format!r})"
            raise ImageDecodeError(f"compressed label is {kind}; labels must be mono8 Images or PNGs")
        require_complete(data)
        label = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2 or label.dtype != np.uint8:
            raise ImageDecodeError("compressed label is not a single-channel 8-bit PNG")
        return label
    raise UnsupportedMessageError(f"{msgtype} cannot hold labels; expected {IMAGE} (mono8) or a PNG {COMPRESSED_IMAGE}")


def _require_file_or_folder(path: Path) -> None:
    """BagReadError for a path that does not exist or is neither a regular file nor a folder: a FIFO would
    block the first read forever, a device would be read without end."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BagReadError(f"{path} does not exist") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BagReadError(f"{path} is not a regular file or a folder (a FIFO, socket or device?); give a "
                           "rosbag2 folder, or a .mcap or .db3 file")


@dataclass
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    message: Any  # deserialized


class BagReader:
    """A rosbag2 directory, or a single .mcap/.db3 file, opened for reading.

    ``warnings`` collects what was recovered from (a missing metadata.yaml, a truncated file, damaged
    chunks or messages); ``read_error`` is set when reading stopped early, with what was read until then kept.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        self.warnings: list[str] = []
        self.read_error: str | None = None
        self.damaged_messages = 0
        self.repair: McapRepair | None = None  # set when the MCAP file is read through a repaired copy
        self._scratch: tempfile.TemporaryDirectory | None = None
        _require_file_or_folder(self.path)
        if self.path.is_dir():
            self._storage_files()  # refuses a FIFO among them before rosbags opens it
        try:
            self._reader = Reader(self.path)
            self._reader.open()
            self.storage = self._storage_of(self.path)
        except Exception as error:  # rosbags raises ReaderError, KeyError, sqlite3 and zstd errors alike
            self._reader = self._open_damaged(error)
        self.topics: dict[str, str] = {c.topic: c.msgtype for c in self._reader.connections}
        self.counts: dict[str, int] = {}
        for connection in self._reader.connections:
            self.counts[connection.topic] = self.counts.get(connection.topic, 0) + connection.msgcount

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = sorted(p for p in self.path.iterdir() if p.suffix in _STORAGE_SUFFIX)
        for file in files:
            _require_file_or_folder(file)
        return files

    def _storage_of(self, path: Path) -> str:
        files = [path] if path.is_file() else self._storage_files()
        return _STORAGE_SUFFIX.get(files[0].suffix, "mcap") if files else "mcap"

    def _open_damaged(self, error: Exception) -> Any:
        """Open the storage file directly, salvaging a truncated MCAP; BagReadError if nothing is readable."""
        from rosbags.rosbag2 import Reader

        files = self._storage_files()
        if len(files) != 1:
            found = ", ".join(p.name for p in files) or "none"
            raise BagReadError(f"{self.path} cannot be read ({error}); storage files found: {found}") from error
        file = files[0]
        self.storage = _STORAGE_SUFFIX[file.suffix]
        if file.stat().st_size == 0:
            raise BagReadError(f"{file} is empty ({error})") from error
        if self.path.is_dir():
            self.warnings.append(f"{self.path} could not be opened as a whole ({error}); read {file.name} directly")
        try:
            reader = Reader(file)
            reader.open()
            return reader
        except Exception as direct_error:
            if self.storage != "mcap":
                raise BagReadError(f"{file} is not a readable sqlite3 bag: {direct_error}") from direct_error
            try:
                return self._open_repaired(file)
            except BagReadError:
                raise
            except Exception as repair_error:
                raise BagReadError(f"{file} is damaged beyond reading: {direct_error}; {repair_error}") from error

    def _open_repaired(self, file: Path) -> Any:
        """A rosbags reader of a repaired copy of the MCAP ``file`` (see ``mcap_repair``); its damage goes
        into ``warnings``."""
        from rosbags.rosbag2 import Reader

        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="seg_node_bag_")
        try:
            self.repair = repair_mcap(file, Path(self._scratch.name))
        except McapRepairError as error:
            raise BagReadError(str(error)) from error
        reader = Reader(self.repair.path)
        reader.open()
        self.warnings.extend(self.repair.describe(str(file)))
        return reader

    def damage(self) -> dict[str, Any]:
        """What could not be read, for reports: a truncation, damaged chunks and messages."""
        repair = self.repair
        return {
            "truncated_at_byte": None if repair is None else repair.truncated_at,
            "damaged_chunks": 0 if repair is None else repair.damaged_chunks,
            "messages_in_damaged_chunks": 0 if repair is None else repair.messages_in_damaged_chunks,
            "damaged_messages": self.damaged_messages,
            "read_error": self.read_error,
        }

    def describe_topics(self) -> str:
        if not self.topics:
            return "the bag has no topics"
        return "; ".join(f"{t} ({m}, {self.counts.get(t, 0)} messages)" for t, m in sorted(self.topics.items()))

    def require_topic(self, topic: str, allowed: tuple[str, ...]) -> str:
        """The message type of ``topic``; TopicNotFoundError or UnsupportedMessageError otherwise."""
        if topic not in self.topics and self.repair is not None:  # lost with the damage: not a usage error
            raise BagReadError(f"topic {topic!r} is not in what could be read of {self.path} "
                               f"({'; '.join(self.repair.describe(self.path.name))}); its topics: "
                               f"{self.describe_topics()}")
        if topic not in self.topics:
            raise TopicNotFoundError(f"topic {topic!r} is not in {self.path}; its topics: {self.describe_topics()}")
        msgtype = self.topics[topic]
        if msgtype not in allowed:
            raise UnsupportedMessageError(f"topic {topic!r} carries {msgtype}; expected one of {', '.join(allowed)}")
        return msgtype

    def messages(self, topics: list[str]) -> Iterator[BagMessage]:
        """The messages of ``topics`` in log-time order; damaged ones are skipped and counted.

        An MCAP chunk that cannot be read is skipped: the rest is read from a repaired copy (messages
        already given are not given again), and what was skipped is counted in ``repair``.
        """
        given: set[tuple[str, int, int]] = set()
        try:
            yield from self._deserialized(topics, given)
            return
        except Exception as error:  # sqlite3.DatabaseError, ReaderError on a bad chunk, zstd errors, OSError
            files = self._storage_files()
            if self.storage != "mcap" or self.repair is not None or len(files) != 1:
                self.read_error = f"reading stopped early: {type(error).__name__}: {error}"
                return
            self.warnings.append(f"{files[0]}: a chunk cannot be read ({type(error).__name__}: {error})")
            try:
                self._reader.close()
                self._reader = self._open_repaired(files[0])
            except Exception as repair_error:  # the copy cannot be made or opened: keep what was read
                self.read_error = f"reading stopped early: {type(error).__name__}: {error}; {repair_error}"
                return
        try:
            yield from self._deserialized(topics, given)
        except Exception as error:
            self.read_error = f"reading stopped early: {type(error).__name__}: {error}"

    def _deserialized(self, topics: list[str], given: set[tuple[str, int, int]]) -> Iterator[BagMessage]:
        """The messages of ``topics`` not in ``given`` (topic, log time, size), which collects those given."""
        connections = [c for c in self._reader.connections if c.topic in topics]
        store = typestore()
        for connection, log_time, raw in self._reader.messages(connections=connections):
            key = (connection.topic, log_time, len(raw))
            if key in given:
                continue
            given.add(key)
            try:
                message = store.deserialize_cdr(raw, connection.msgtype)
            except Exception as error:  # a damaged CDR buffer raises anything from struct to IndexError
                self.damaged_messages += 1
                self.warnings.append(f"{connection.topic} message at {log_time} ns is damaged: {error!r}")
                continue
            yield BagMessage(connection.topic, connection.msgtype, log_time, bytes(raw), message)

    def close(self) -> None:
        self._reader.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _header(stamp: int, frame_id: str) -> Any:
    types = typestore().types
    time = types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
    return types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def image_message(image: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    """A sensor_msgs/Image of a uint8 HxW (mono8) or HxWx3 array."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    step = width * (image.shape[2] if image.ndim == 3 else 1)
    return typestore().types[IMAGE](
        header=_header(stamp, frame_id),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=image.reshape(-1),
    )


def compressed_message(data: bytes, image_format: str, stamp: int, frame_id: str) -> Any:
    return typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp, frame_id), format=image_format, data=np.frombuffer(data, dtype=np.uint8)
    )


@dataclass
class BagWriter:
    """A new rosbag2 directory; MCAP chunks are zstd-compressed (labels and masks shrink tenfold)."""

    path: Path
    storage: str = "mcap"
    _connections: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

        if self.storage not in STORAGES:
            raise BagError(f"storage {self.storage!r} is not one of {', '.join(STORAGES)}")
        self.path = Path(self.path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already; remove it or pick another path")
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        if self.storage == "mcap":
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()

    def _connection(self, topic: str, msgtype: str) -> Any:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        return self._connections[topic]

    def write(self, topic: str, message: Any, log_time_ns: int) -> None:
        msgtype = message.__msgtype__
        self._writer.write(self._connection(topic, msgtype), log_time_ns, typestore().serialize_cdr(message, msgtype))

    def write_raw(self, topic: str, msgtype: str, raw: bytes, log_time_ns: int) -> None:
        """Copy an already serialized message (from another bag) unchanged."""
        self._writer.write(self._connection(topic, msgtype), log_time_ns, raw)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.abort()
            shutil.rmtree(self.path, ignore_errors=True)
