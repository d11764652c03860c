"""Start seg_node: ``ros2 launch seg_node segment.launch.py [camera_topic:=/cam/image_raw] [rviz:=true]``.

Arguments left empty keep the value from params_file (the package's config/seg_node.yaml by default).
The default camera input ``image`` is remapped to camera_topic; a topic ending in /compressed is read
as sensor_msgs/CompressedImage. Sets FASTRTPS_DEFAULT_PROFILES_FILE to the package's Fast DDS profile
(a 64 MiB shared-memory segment, so full-resolution images cross processes intact) unless the
environment already names one; the publishing camera driver needs the same profile.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "seg_node"
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"


def segmentation_node(context: LaunchContext) -> list:
    """The node, with only the arguments the user gave overriding params_file."""
    overrides = {}
    for name in ("weights", "backend"):
        value = LaunchConfiguration(name).perform(context).strip()
        if value:
            overrides[name] = value
    cameras = [topic.strip() for topic in LaunchConfiguration("cameras").perform(context).split(",")]
    if any(cameras):
        overrides["cameras"] = [topic for topic in cameras if topic]
    return [
        Node(
            package=PACKAGE,
            executable="seg_node",
            name="seg_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[("image", LaunchConfiguration("camera_topic"))],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    config = os.path.join(share, "config")
    profile = os.environ.get(PROFILE_VARIABLE) or os.path.join(config, "fastdds_shm.xml")
    return LaunchDescription([
        DeclareLaunchArgument("weights", default_value="", description="weights .safetensors or shipped name"),
        DeclareLaunchArgument("backend", default_value="", description="auto, torch2trt, torch or onnxruntime"),
        DeclareLaunchArgument("camera_topic", default_value="image", description="topic the input `image` reads"),
        DeclareLaunchArgument(
            "cameras", default_value="", description="several input topics, comma-separated (a list parameter)"
        ),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(config, "seg_node.yaml"), description="parameter YAML"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz 2 with seg_node.rviz"),
        SetEnvironmentVariable(PROFILE_VARIABLE, profile),
        OpaqueFunction(function=segmentation_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(config, "seg_node.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
