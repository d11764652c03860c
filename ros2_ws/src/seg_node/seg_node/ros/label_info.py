"""Class metadata as vision pipelines publish it: vision_msgs/LabelInfo on ``~/label_info``, latched.

Beside the JSON on ``~/classes`` (names and colours), where vision_msgs is importable: the ROS machines and
images have it (``ros-<distro>-vision-msgs``; package.xml declares it, so rosdep installs it). Without it the
node runs as before and says once that ``~/label_info`` is off. Fields as Humble's vision_msgs (4.1) has them:
``class_map`` (VisionClass: class_id uint16, class_name) and ``threshold``, 0 here: each pixel gets its most
likely class, none is left unlabelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from std_msgs.msg import Header

from ..weights import SegClass

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # not installed here: ~/classes alone
    LabelInfo = VisionClass = None

TOPIC = "~/label_info"
UNAVAILABLE = "vision_msgs is not installed (ros-<distro>-vision-msgs): no vision_msgs/LabelInfo on ~/label_info"


def available() -> bool:
    return LabelInfo is not None


def label_info_message(classes: Iterable[SegClass], header: Header, label_info: type = LabelInfo,
                       vision_class: type = VisionClass) -> Any:
    """The LabelInfo of ``classes`` (``label_info``/``vision_class``: the message types, vision_msgs's)."""
    return label_info(
        header=header,
        class_map=[vision_class(class_id=segment.id, class_name=segment.name) for segment in classes],
        threshold=0.0,
    )
