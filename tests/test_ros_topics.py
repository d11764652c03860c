"""seg_node.ros.topics (one naming scheme for inputs, outputs and status names) and the CameraInfo the
node publishes beside each label (seg_node.ros.conversions.output_camera_info). No DDS traffic."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from seg_node.ros.conversions import output_camera_info
from seg_node.ros.parameters import cameras_from_topics
from seg_node.ros.topics import camera_info_topic, camera_name, output_topic, status_name


@pytest.mark.parametrize(
    ("given", "name", "info"),
    [
        ("image", "image", "camera_info"),
        ("/front/image_raw", "front/image_raw", "/front/camera_info"),
        ("front/image_raw/compressed", "front/image_raw", "front/camera_info"),
        ("rear/compressed", "rear", "camera_info"),
        ("~/image", "image", "~/camera_info"),
        ("/image", "image", "/camera_info"),
    ],
)
def test_camera_names_and_their_camera_info_topics(given, name, info):
    assert camera_name(given) == name
    assert camera_info_topic(given) == info
    assert output_topic(name, "label") == f"~/{name}/label"


def test_output_names_and_status_names():
    assert output_topic("image", "camera_info") == "~/image/camera_info"
    with pytest.raises(ValueError, match="unknown output"):
        output_topic("image", "labels")
    assert status_name("/perception/seg_node", "engine") == "/perception/seg_node: engine"


def test_cameras_keep_the_given_name_and_resolve_with_remapping():
    remapped = {"image": "/cam/image_raw", "rear/compressed": "/rear/compressed"}
    cameras = cameras_from_topics(["image", "rear/compressed"], lambda topic: remapped[topic])
    assert [(c.name, c.resolved, c.compressed, c.info_topic) for c in cameras] == [
        ("image", "/cam/image_raw", False, "camera_info"),
        ("rear", "/rear/compressed", True, "camera_info"),
    ]


def camera_info(width: int = 640, height: int = 480) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.1, -0.2, 0.0, 0.0, 0.05]
    info.k = [500.0, 0.0, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [500.0, 0.0, 320.0, -25.0, 0.0, 510.0, 240.0, 5.0, 0.0, 0.0, 1.0, 0.0]
    return info


def test_camera_info_at_the_input_size_is_the_cameras_own():
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    info = camera_info()
    out = output_camera_info(info, (480, 640), (480, 640), header)
    assert out.header == header and (out.width, out.height) == (640, 480)
    assert np.array_equal(out.k, info.k) and np.array_equal(out.p, info.p) and np.array_equal(out.d, info.d)
    assert out.distortion_model == "plumb_bob"


def test_camera_info_at_network_size_scales_k_and_p_per_axis():
    out = output_camera_info(camera_info(), (480, 640), (96, 128), Header())
    sx, sy = 128 / 640, 96 / 480
    assert (out.width, out.height) == (128, 96)
    assert np.allclose(out.k, [500 * sx, 0, 320 * sx, 0, 510 * sy, 240 * sy, 0, 0, 1])
    assert np.allclose(out.p, [500 * sx, 0, 320 * sx, -25 * sx, 0, 510 * sy, 240 * sy, 5 * sy, 0, 0, 1, 0])
    assert np.array_equal(out.d, camera_info().d) and np.array_equal(out.r, camera_info().r)


def test_camera_info_with_binning_and_roi_describes_the_output_image():
    info = camera_info(1280, 960)
    info.binning_x = info.binning_y = 2
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 0, 0, 1280, 960
    out = output_camera_info(info, (480, 640), (96, 128), Header())  # the 2x-binned frame, then /5
    assert np.allclose(out.k[:3], [500 / 2 / 5, 0, 320 / 2 / 5])
    assert out.binning_x == out.binning_y == 0 and out.roi.width == 0
    info = camera_info()
    info.roi.x_offset, info.roi.y_offset = 100, 40
    out = output_camera_info(info, (200, 300), (200, 300), Header())  # a region of interest, not resized
    assert np.allclose([out.k[2], out.k[5], out.p[2], out.p[6]], [220, 200, 220, 200])
