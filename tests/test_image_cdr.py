"""seg_node.ros.image_cdr: serialized Images read and written as rclpy's own serialisation does."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_node.imaging import ImageDecodeError
from seg_node.ros.conversions import frame_from_serialized, image_message
from seg_node.ros.image_cdr import image_cdr, parse_image

# frame ids of every length modulo 4 (the padding after them differs), and one that is not ASCII
FRAME_IDS = ["", "c", "ca", "cam", "camera", "kamera_vorn_ü", "x" * 37]
PIXELS = [((5, 7), "mono8"), ((4, 6, 3), "rgb8"), ((3, 5, 3), "bgr8"), ((2, 3, 4), "rgba8"), ((6, 9), "mono8")]


def header(frame_id: str) -> Header:
    return Header(stamp=Time(sec=-5 if frame_id == "c" else 1_733_000_123, nanosec=999_999_999), frame_id=frame_id)


@pytest.mark.parametrize("frame_id", FRAME_IDS)
@pytest.mark.parametrize(("shape", "encoding"), PIXELS)
def test_image_cdr_is_what_rclpy_reads_and_parse_image_reads_what_rclpy_writes(frame_id, shape, encoding) -> None:
    pixels = np.random.default_rng(len(frame_id)).integers(0, 256, shape, dtype=np.uint8)
    stamped = header(frame_id)
    written = image_cdr(pixels, stamped, encoding)
    message = deserialize_message(written, Image)
    assert message.header == stamped
    assert (message.height, message.width, message.encoding, message.is_bigendian) == (*shape[:2], encoding, 0)
    assert message.step == pixels.nbytes // shape[0]
    assert bytes(message.data) == pixels.tobytes()

    by_rclpy = serialize_message(image_message(pixels, stamped, encoding))
    assert len(by_rclpy) == len(written)
    fields = parse_image(by_rclpy)
    assert fields.header == stamped
    assert (fields.height, fields.width, fields.encoding, fields.step) == (*shape[:2], encoding, message.step)
    assert bytes(fields.data) == pixels.tobytes()


def big_endian_image(pixels: np.ndarray, frame_id: str, sec: int, nanosec: int) -> bytes:
    """A CDR big-endian Image, as a big-endian machine's DDS would write it (by hand: rclpy writes its host's)."""
    def string(text: str) -> bytes:
        encoded = text.encode() + b"\x00"
        return struct.pack(">I", len(encoded)) + encoded

    body = struct.pack(">iI", sec, nanosec) + string(frame_id)
    body += bytes(-len(body) % 4) + struct.pack(">II", *pixels.shape[:2]) + string("rgb8") + b"\x00"
    body += bytes(-len(body) % 4) + struct.pack(">II", pixels.shape[1] * 3, pixels.nbytes)
    return b"\x00\x00\x00\x00" + body + pixels.tobytes()


def test_a_big_endian_frame_is_read_and_a_view_not_a_copy() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    serialized = big_endian_image(pixels, "front", 17, 250)
    frame, color_order, stamped = frame_from_serialized(serialized)
    assert color_order == "rgb" and stamped == Header(stamp=Time(sec=17, nanosec=250), frame_id="front")
    np.testing.assert_array_equal(frame, pixels)
    assert np.shares_memory(frame, np.frombuffer(serialized, np.uint8))


def test_every_cut_of_a_serialized_frame_is_refused_with_the_field_it_ends_in() -> None:
    serialized = image_cdr(np.zeros((2, 3, 3), np.uint8), header("camera"))
    for length in range(4, len(serialized)):
        with pytest.raises(ImageDecodeError) as refused:
            frame_from_serialized(serialized[:length])
        assert "\n" not in str(refused.value)
    assert "ends inside its height and width" in str(pytest.raises(
        ImageDecodeError, frame_from_serialized, serialized[:28]).value)
    assert "data says 18 bytes, only 5 follow" in str(pytest.raises(
        ImageDecodeError, frame_from_serialized, serialized[:-13]).value)


def test_fields_that_lie_are_refused() -> None:
    serialized = bytearray(image_cdr(np.zeros((2, 3), np.uint8), header("cam")))
    serialized[19] = ord("x")  # the NUL of "cam" (after 4 bytes of encapsulation, 8 of stamp, 4 of length)
    with pytest.raises(ImageDecodeError, match="frame_id is not a NUL-terminated string"):
        frame_from_serialized(bytes(serialized))
    two_by_three = image_cdr(np.zeros((2, 3), np.uint8), header("cam"))
    taller = two_by_three.replace(b"\x02\x00\x00\x00\x03", b"\x09\x00\x00\x00\x03")  # height 9
    with pytest.raises(ImageDecodeError, match="data holds 6 bytes"):
        frame_from_serialized(taller)


def test_another_representation_is_left_to_rclpy() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    serialized = image_cdr(pixels, header("cam"))
    other = b"\x00\x03" + serialized[2:]  # parameter-list CDR: not read by image_cdr
    assert parse_image(other) is None
    frame, _, stamped = frame_from_serialized(other)  # rclpy's deserialisation reads it
    np.testing.assert_array_equal(frame, pixels)
    assert stamped.frame_id == "cam"
    with pytest.raises(ImageDecodeError, match="cannot deserialize the Image"):
        frame_from_serialized(b"\x00\x03\x00\x00\x01")
