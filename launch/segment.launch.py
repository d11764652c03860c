"""Start seg_node: ``ros2 launch seg_node segment.launch.py [weights:=...] [backend:=...] [rviz:=true]``.

Sets FASTRTPS_DEFAULT_PROFILES_FILE to the package's Fast DDS profile (a larger
shared-memory segment, so full-resolution images cross processes intact)
unless the environment already names one.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PACKAGE = "seg_node"


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument("weights", default_value="", description="weights .safetensors; empty: shipped CGNet"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto, torch2trt, torch or onnxruntime"),
        DeclareLaunchArgument("camera_topic", default_value="image", description="input image topic of one camera"),
        DeclareLaunchArgument(
            "cameras", default_value="", description="several input topics, comma-separated; overrides camera_topic"
        ),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "seg_node.yaml"), description="parameter YAML"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz 2 with seg_node.rviz"),
    ]
    cameras = PythonExpression([
        "[t.strip() for t in '", LaunchConfiguration("cameras"), "'.split(',') if t.strip()] or ['",
        LaunchConfiguration("camera_topic"), "']",
    ])
    node = Node(
        package=PACKAGE,
        executable="seg_node",
        name="seg_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {"weights": LaunchConfiguration("weights"), "backend": LaunchConfiguration("backend"), "cameras": cameras},
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "seg_node.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.path.join(share, "config", "fastdds_shm.xml")
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile),
        node,
        rviz,
    ])
