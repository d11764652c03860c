"""sensor_msgs images to NumPy and back without cv_bridge, copying only what conversion needs.

The node's camera frames and outputs travel as serialized bytes (``image_cdr``): a received frame is a
view into them. For Python messages, elsewhere: receiving, ``msg.data`` is an array.array, which
decode_raw views (rgb8/bgr8 without a copy); sending, Jazzy's generated setter turns anything but
bytes-like input into an array element by element (0.3-0.5 s for a 6 MB frame), so pixels go in as an
array.array filled by one memcpy.
"""

from __future__ import annotations

import array

import numpy as np
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..imaging import ImageDecodeError, decode_compressed, decode_raw
from .image_cdr import parse_image, pixel_encoding


def frame_from_message(message: Image | CompressedImage) -> tuple[np.ndarray, str]:
    """The message's pixels as uint8 HxWx3 and their colour order; ImageDecodeError when they are unusable."""
    if isinstance(message, CompressedImage):
        return decode_compressed(message.data)
    return decode_raw(message.encoding, message.height, message.width, message.step, message.data)


def frame_from_serialized(serialized: bytes) -> tuple[np.ndarray, str, Header]:
    """A serialized sensor_msgs/Image's pixels (a view into ``serialized`` for rgb8/bgr8), their colour
    order and its header; ImageDecodeError when they are unusable."""
    fields = parse_image(serialized)
    if fields is None:  # a representation image_cdr does not read: rclpy's own deserialisation
        try:
            message = deserialize_message(serialized, Image)
        except _rclpy.RMWError as error:  # what rclpy's deserialize_message raises for bytes it cannot read
            raise ImageDecodeError(f"cannot deserialize the Image: {error}") from None
        return (*frame_from_message(message), message.header)
    frame, color_order = decode_raw(fields.encoding, fields.height, fields.width, fields.step, fields.data)
    return frame, color_order, fields.header


def image_message(pixels: np.ndarray, header: Header, encoding: str | None = None) -> Image:
    """A sensor_msgs/Image of uint8 HxW (mono8) or HxWx3 (rgb8 unless ``encoding`` says otherwise)."""
    encoding = pixel_encoding(pixels, encoding)
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(pixels)
    message = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    message.is_bigendian = 0
    message.step = pixels.nbytes // pixels.shape[0]
    message.data = data
    return message


def output_camera_info(info: CameraInfo, input_size: tuple[int, int], output_size: tuple[int, int],
                       header: Header) -> CameraInfo:
    """The CameraInfo of an output of ``output_size`` (H, W) made from a frame of ``input_size`` (H, W).

    At the input's size (and without binning or a region of interest) it is ``info`` under ``header``;
    otherwise K and P are those of the frame (the ROI offset and binning applied, as image_geometry does)
    scaled to the output: fx, cx and Tx by the width ratio, fy, cy and Ty by the height ratio.
    """
    in_height, in_width = input_size
    out_height, out_width = output_size
    binning_x, binning_y = info.binning_x or 1, info.binning_y or 1
    offset_x, offset_y = info.roi.x_offset, info.roi.y_offset
    result = CameraInfo(header=header, distortion_model=info.distortion_model, d=info.d, r=info.r)
    if (in_height, in_width) == (out_height, out_width) and binning_x == binning_y == 1 and not (offset_x or offset_y):
        result.height, result.width, result.k, result.p = info.height, info.width, info.k, info.p
        result.binning_x, result.binning_y, result.roi = info.binning_x, info.binning_y, info.roi
        return result
    scale_x = out_width / in_width / binning_x
    scale_y = out_height / in_height / binning_y
    k = np.array(info.k, dtype=np.float64).reshape(3, 3)
    p = np.array(info.p, dtype=np.float64).reshape(3, 4)
    k[0, 2] -= offset_x
    k[1, 2] -= offset_y
    p[0, 2] -= offset_x
    p[1, 2] -= offset_y
    k[0, :] *= scale_x
    k[1, :] *= scale_y
    p[0, :] *= scale_x  # fx, skew, cx, Tx = -fx B
    p[1, :] *= scale_y  # fy, cy, Ty
    result.height, result.width = out_height, out_width
    result.k, result.p = k.ravel(), p.ravel()
    return result
