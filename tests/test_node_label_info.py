"""vision_msgs/LabelInfo on ~/label_info, latched, where vision_msgs is importable (#43 item 6).

vision_msgs is not among the ROS packages this machine's environment installs from PyPI (its Python
bindings come from rosidl's CMake build, not tried here), so here the node runs without it and the DDS
test skips; on a ROS machine (ros-<distro>-vision-msgs, which rosdep installs from package.xml) it runs.
The message's content is checked here in any case, with stand-ins that have LabelInfo's and VisionClass's
fields (Humble's vision_msgs 4.1).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field

import pytest
import ros_helpers as ros
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import Header

from seg_node.ros import label_info
from seg_node.weights import SegClass

DOMAIN = ros.domain_id(offset=89)
HAS_VISION_MSGS = importlib.util.find_spec("vision_msgs") is not None


@dataclass
class VisionClassFields:  # vision_msgs/VisionClass
    class_id: int = 0
    class_name: str = ""


@dataclass
class LabelInfoFields:  # vision_msgs/LabelInfo
    header: Header = field(default_factory=Header)
    class_map: list = field(default_factory=list)
    threshold: float = 0.0


def test_the_label_info_maps_every_class_id_to_its_name():
    classes = [SegClass(0, "Sky", (1, 1, 1)), SegClass(1, "Building", (128, 0, 0)), SegClass(3, "Road", (9, 9, 0))]
    header = Header(frame_id="camera")
    message = label_info.label_info_message(classes, header, LabelInfoFields, VisionClassFields)
    assert message.header is header and message.threshold == 0.0
    assert message.class_map == [VisionClassFields(0, "Sky"), VisionClassFields(1, "Building"),
                                 VisionClassFields(3, "Road")]
    assert label_info.available() == HAS_VISION_MSGS


@pytest.mark.slow  # a node process over DDS
@pytest.mark.skipif(not HAS_VISION_MSGS, reason="vision_msgs is not installed here (not among the ROS "
                    "packages this environment has from PyPI); on a ROS machine: apt install ros-<distro>-vision-msgs")
def test_label_info_is_latched_beside_the_classes(make_weights, tmp_path):
    from vision_msgs.msg import LabelInfo

    weights = make_weights(tmp_path, "cgnet")
    command = [sys.executable, "-m", "seg_node", "--ros-args", "-p", f"weights:={weights}", "-p", "backend:=torch",
               "-p", "device:=cpu", "-p", "threads:=1"]
    probe = ros.Probe(DOMAIN, "label_info_probe")
    log = tmp_path / "node.log"
    try:
        with ros.running_group(command, ros.node_environment(DOMAIN), log) as process:
            probe.wait_for_publisher("/seg_node/label_info")
            # subscribed after it was published: latched (transient local) delivers it all the same
            probe.subscribe(LabelInfo, "/seg_node/label_info", QoSProfile(depth=1,
                                                                          durability=DurabilityPolicy.TRANSIENT_LOCAL))
            message = probe.wait_for("/seg_node/label_info", lambda m: True)
            assert [(c.class_id, c.class_name) for c in message.class_map] == [(i, f"class{i}") for i in range(11)]
            ros.assert_clean_stop(process, log)
    finally:
        probe.close()
