"""The node's names, written once: per-camera inputs and outputs, and its /diagnostics status names.

A camera is named by its topic as given in the ``cameras`` parameter, before namespace and remapping, with
a ``/compressed`` ending removed: ``image`` (the default, which launch files remap to the driver's topic)
names camera ``image``, ``/front/image_raw`` names ``front/image_raw``. Its outputs are private topics of
the node, ``~/<camera>/<output>``: with the remap ``image:=/cam/image_raw`` and the node ``/seg_node``,
labels go to ``/seg_node/image/label``. Its calibration is read from the sibling ``camera_info`` of the
given topic (``image`` -> ``camera_info``, itself remappable; ``/front/image_raw`` -> ``/front/camera_info``).
"""

from __future__ import annotations

COMPRESSED_SUFFIX = "/compressed"
CAMERA_INFO = "camera_info"
# Everything the node publishes per camera; label always, the rest only while someone subscribes.
OUTPUTS = ("label", "color_mask", "overlay", "confidence", CAMERA_INFO)


def image_topic(given: str) -> str:
    """The image topic a ``cameras`` entry names, without a ``/compressed`` transport ending."""
    return given.strip().removesuffix(COMPRESSED_SUFFIX)


def camera_name(given: str) -> str:
    """The camera's name for its outputs: the given topic without /compressed, ``~`` and outer slashes."""
    return image_topic(given).lstrip("~").strip("/")


def output_topic(camera: str, output: str) -> str:
    """``~/<camera>/<output>``: one of OUTPUTS of the camera named ``camera`` (see camera_name)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; the outputs are {', '.join(OUTPUTS)}")
    return f"~/{camera}/{output}"


def camera_info_topic(given: str) -> str:
    """The sensor_msgs/CameraInfo topic beside a given image topic: its last name replaced by camera_info."""
    base = image_topic(given)
    parent, _, _ = base.rpartition("/")
    return f"{parent}/{CAMERA_INFO}" if parent or base.startswith("/") else CAMERA_INFO


def status_name(node_name: str, part: str) -> str:
    """A /diagnostics status name: the node's fully qualified name, so two nodes in one domain differ."""
    return f"{node_name}: {part}"
