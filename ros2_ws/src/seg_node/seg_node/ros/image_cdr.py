"""sensor_msgs/Image as the bytes DDS carries (CDR), read and written without a Python message.

Why: rclpy hands a subscriber a Python message, which costs a deserialisation into C and then a copy of
every pixel into an array.array, and takes a Python message from a publisher, which costs a copy into C
and a serialisation; at 1920x1080 those are most of what the node does per frame. Both ends of rclpy also
speak serialized bytes, since Humble: ``create_subscription(..., raw=True)`` hands the callback the bytes
taken from DDS, and ``Publisher.publish(bytes)`` sends bytes as they are. So the node views the pixels
inside the received bytes (no copy) and builds each output as one bytes object (one copy of its pixels).

Layout (OMG CDR, as rmw_fastrtps, rmw_cyclonedds and rmw_zenoh write ROS messages): a 4-byte
encapsulation header (representation id, options), then the fields in order, each aligned to its size
counted from the end of that header; a string is a uint32 length that counts its NUL, then its bytes and
the NUL; a uint8 sequence is a uint32 count, then the bytes. Plain CDR2 (XCDR2 of a final type) lays out
sensor_msgs/Image the same way, since none of its fields is wider than 4 bytes. Any other representation
is left to rclpy (``None`` from ``parse_image``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from ..imaging import ImageDecodeError

# representation id -> struct byte order: CDR big and little endian, plain CDR2 big and little endian
BYTE_ORDERS = {b"\x00\x00": ">", b"\x00\x01": "<", b"\x00\x06": ">", b"\x00\x07": "<"}
ENCAPSULATION = b"\x00\x01\x00\x00"  # what image_cdr writes: CDR, little endian, no options
ORIGIN = len(ENCAPSULATION)  # alignment counts from here
ENCODINGS_BY_CHANNELS = {1: "mono8", 3: "rgb8"}


@dataclass(frozen=True)
class ImageFields:
    """A serialized Image's fields; ``data`` is a view into the serialized bytes (kept alive by it)."""

    header: Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


class _Reader:
    def __init__(self, serialized: bytes, byte_order: str) -> None:
        self.buffer = memoryview(serialized)
        self.order = byte_order
        self.offset = ORIGIN

    def unpack(self, field: str, code: str) -> tuple:
        size = struct.calcsize(code[0])
        self.offset += -(self.offset - ORIGIN) % size
        layout = self.order + code
        end = self.offset + struct.calcsize(layout)
        if end > len(self.buffer):
            raise ImageDecodeError(f"serialized Image of {len(self.buffer)} bytes ends inside its {field}")
        values = struct.unpack_from(layout, self.buffer, self.offset)
        self.offset = end
        return values

    def block(self, field: str) -> memoryview:
        (length,) = self.unpack(field, "I")
        end = self.offset + length
        if end > len(self.buffer):
            raise ImageDecodeError(
                f"serialized Image's {field} says {length} bytes, only {len(self.buffer) - self.offset} follow")
        block = self.buffer[self.offset:end]
        self.offset = end
        return block

    def string(self, field: str) -> str:
        raw = self.block(field)
        if not raw or raw[-1] != 0:
            raise ImageDecodeError(f"serialized Image's {field} is not a NUL-terminated string")
        try:
            return bytes(raw[:-1]).decode()
        except UnicodeDecodeError as error:
            raise ImageDecodeError(f"serialized Image's {field} is not UTF-8: {error}") from None


def parse_image(serialized: bytes) -> ImageFields | None:
    """The fields of a serialized sensor_msgs/Image, or None for a representation other than (plain) CDR;
    ImageDecodeError when the bytes end before the fields they announce."""
    byte_order = BYTE_ORDERS.get(bytes(serialized[:2]))
    if byte_order is None or len(serialized) < ORIGIN:
        return None
    reader = _Reader(serialized, byte_order)
    sec, nanosec = reader.unpack("header.stamp", "iI")
    frame_id = reader.string("header.frame_id")
    height, width = reader.unpack("height and width", "II")
    encoding = reader.string("encoding")
    (is_bigendian,) = reader.unpack("is_bigendian", "B")
    (step,) = reader.unpack("step", "I")
    data = reader.block("data")
    header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
    return ImageFields(header, height, width, encoding, is_bigendian, step, data)


def _align(parts: bytearray, size: int) -> bytearray:
    parts += bytes(-(len(parts) - ORIGIN) % size)
    return parts


def _string(text: str) -> bytes:
    encoded = text.encode() + b"\x00"
    return struct.pack("<I", len(encoded)) + encoded


def pixel_encoding(pixels: np.ndarray, encoding: str | None) -> str:
    """``encoding``, or for None the one of uint8 HxW (mono8) or HxWx3 (rgb8) pixels; ValueError for others."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"an Image takes uint8 HxW or HxWxC pixels, got {pixels.dtype} {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if encoding is None and channels not in ENCODINGS_BY_CHANNELS:
        raise ValueError(f"name the encoding of {channels}-channel pixels")
    return encoding or ENCODINGS_BY_CHANNELS[channels]


def image_cdr(pixels: np.ndarray, header: Header, encoding: str | None = None) -> bytes:
    """A serialized sensor_msgs/Image (CDR, little endian) of uint8 HxW (mono8) or HxWx3 (rgb8 unless
    ``encoding`` says otherwise) ``pixels``, for ``Publisher.publish``; the pixels are copied once."""
    encoding = pixel_encoding(pixels, encoding)
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    step = pixels.nbytes // height
    parts = bytearray(ENCAPSULATION)
    parts += struct.pack("<iI", header.stamp.sec, header.stamp.nanosec) + _string(header.frame_id)
    _align(parts, 4).extend(struct.pack("<II", height, width) + _string(encoding))
    parts += b"\x00"  # is_bigendian: no multi-byte pixels here
    _align(parts, 4).extend(struct.pack("<II", step, pixels.nbytes))
    return b"".join((parts, pixels))
