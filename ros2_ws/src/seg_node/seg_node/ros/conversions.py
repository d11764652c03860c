"""sensor_msgs images to NumPy and back without cv_bridge, copying only what conversion needs.

Receiving: ``msg.data`` is an array.array; decode_raw views it (rgb8/bgr8 without a copy).
Sending: Jazzy's generated setter turns anything but bytes-like input into an array element by
element (0.3-0.5 s for a 6 MB frame), so pixels go in as an array.array filled by one memcpy.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..imaging import decode_compressed, decode_raw

ENCODINGS_BY_CHANNELS = {1: "mono8", 3: "rgb8"}


def frame_from_message(message: Image | CompressedImage) -> tuple[np.ndarray, str]:
    """The message's pixels as uint8 HxWx3 and their colour order; ImageDecodeError when they are unusable."""
    if isinstance(message, CompressedImage):
        return decode_compressed(message.data)
    return decode_raw(message.encoding, message.height, message.width, message.step, message.data)


def image_message(pixels: np.ndarray, header: Header, encoding: str | None = None) -> Image:
    """A sensor_msgs/Image of uint8 HxW (mono8) or HxWx3 (rgb8 unless ``encoding`` says otherwise)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"image_message takes uint8 HxW or HxWx3 pixels, got {pixels.dtype} {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(pixels)
    message = Image(header=header, height=pixels.shape[0], width=pixels.shape[1])
    message.encoding = encoding or ENCODINGS_BY_CHANNELS[channels]
    message.is_bigendian = 0
    message.step = pixels.shape[1] * channels
    message.data = data
    return message
