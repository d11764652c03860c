"""Start seg_node: ``ros2 launch seg_node segment.launch.py [camera_topic:=/cam/image_raw] [rviz:=true]``.

Arguments left empty keep the value from params_file (the package's config/seg_node.yaml by default); its
``seg_node:`` section applies under any ``namespace:=``.
The default camera input ``image`` is remapped to camera_topic, and its ``camera_info`` input to the
sibling topic (``/cam/image_raw`` -> ``/cam/camera_info``); a topic ending in /compressed is read as
sensor_msgs/CompressedImage. The node is a managed (lifecycle) node that configures and activates itself
unless ``autostart:=false``, which leaves it unconfigured for a lifecycle manager. Sets
FASTRTPS_DEFAULT_PROFILES_FILE to the package's Fast DDS profile (a 64 MiB shared-memory segment, so
full-resolution images cross processes intact) unless the environment already names one; the publishing
camera driver needs the same profile. ``rviz:=true`` starts RViz 2 with a copy of config/seg_node.rviz
that shows this launch's input and outputs, or warns and goes on without it where rviz2 is not installed.
"""

import os
import posixpath
import shutil
import signal
import tempfile
import threading

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnShutdown
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "seg_node"
NODE_NAME = "seg_node"
PROFILE_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
COMPRESSED_SUFFIX = "/compressed"
DEFAULT_CAMERA = "image"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
# Names of the displays in config/seg_node.rviz and the output each one shows ("" is the camera input).
RVIZ_DISPLAYS = {"Input": "", "Overlay": "overlay", "Color mask": "color_mask"}


def argument(context: LaunchContext, name: str) -> str:
    return LaunchConfiguration(name).perform(context).strip()


def boolean(context: LaunchContext, name: str) -> bool:
    value = argument(context, name).lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"launch argument {name} must be true or false, not {value!r}")
    return value in TRUE_WORDS


def camera_info_topic(image_topic: str) -> str:
    """The camera_info beside an image topic: /cam/image_raw[/compressed] -> /cam/camera_info."""
    return posixpath.join(posixpath.dirname(image_topic.removesuffix(COMPRESSED_SUFFIX)), "camera_info")


def cameras_argument(context: LaunchContext) -> list[str]:
    return [topic.strip() for topic in argument(context, "cameras").split(",") if topic.strip()]


def namespaced_parameters(path: str, namespace: str) -> str | None:
    """The text of a params_file copy for a node in ``namespace``, or None where the file serves as it is.

    Parameter files name nodes by their full name, so under a namespace a file keyed ``seg_node:`` (as
    config/seg_node.yaml is, and as users write theirs) would silently not apply. Its ``seg_node`` and
    ``/seg_node`` keys become ``/<namespace>/seg_node`` in the copy, as nav2's RewrittenYaml does;
    wildcard and full-name keys stay. A file that cannot be read is left to the node to report."""
    namespace = namespace.strip("/")
    if not namespace:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(document, dict) or not {NODE_NAME, "/" + NODE_NAME} & set(document):
        return None
    full_name = f"/{namespace}/{NODE_NAME}"
    rewritten = {full_name if key in (NODE_NAME, "/" + NODE_NAME) else key: value for key, value in document.items()}
    header = f"# Written by segment.launch.py from {path} for the node {full_name}.\n"
    return header + yaml.safe_dump(rewritten, sort_keys=False)


def file_for_this_launch(text: str, suffix: str) -> tuple[str, RegisterEventHandler]:
    """``text`` in a temporary file, and the handler that removes it when the launch shuts down."""
    with tempfile.NamedTemporaryFile("w", prefix="seg_node_", suffix=suffix, delete=False) as file:
        file.write(text)
    return file.name, RegisterEventHandler(OnShutdown(on_shutdown=lambda event, context: remove_quietly(file.name)))


def segmentation_node(context: LaunchContext) -> list:
    """The node, with only the arguments the user gave overriding params_file."""
    overrides = {name: argument(context, name) for name in ("weights", "backend") if argument(context, name)}
    cameras = cameras_argument(context)
    if cameras:
        overrides["cameras"] = cameras
    overrides["use_sim_time"] = boolean(context, "use_sim_time")
    overrides["autostart"] = boolean(context, "autostart")
    log_level = argument(context, "log_level").lower()
    if log_level not in LOG_LEVELS:
        raise ValueError(f"launch argument log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    camera_topic = argument(context, "camera_topic") or DEFAULT_CAMERA
    params_file = argument(context, "params_file")
    cleanup = []
    rewritten = namespaced_parameters(params_file, argument(context, "namespace"))
    if rewritten is not None:
        params_file, removal = file_for_this_launch(rewritten, ".yaml")
        cleanup.append(removal)
    return [
        Node(
            package=PACKAGE,
            executable="seg_node",
            name=NODE_NAME,
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides],
            remappings=[("image", camera_topic), ("camera_info", camera_info_topic(camera_topic))],
            ros_arguments=["--log-level", log_level],
        ),
        *cleanup,
    ]


def rviz_executable() -> str | None:
    """rviz2 as launch_ros would start it (lib/rviz2/rviz2 under its ament prefix), or on PATH."""
    try:
        candidate = os.path.join(get_package_prefix("rviz2"), "lib", "rviz2", "rviz2")
        if os.access(candidate, os.X_OK):
            return candidate
    except (PackageNotFoundError, KeyError, ValueError):
        pass
    return shutil.which("rviz2")


def absolute_topic(namespace: str, topic: str) -> str:
    return topic if topic.startswith("/") else posixpath.join("/", namespace.strip("/"), topic)


def rviz_config(template: str, namespace: str, camera_topic: str, camera_name: str) -> str:
    """seg_node.rviz with this launch's topics, as the text of a new config file."""
    with open(template, encoding="utf-8") as file:
        config = yaml.safe_load(file)
    node = absolute_topic(namespace, NODE_NAME)
    for display in config["Visualization Manager"]["Displays"]:
        output = RVIZ_DISPLAYS.get(display.get("Name"))
        if output == "":
            display["Topic"]["Value"] = absolute_topic(namespace, camera_topic)
        elif output:
            display["Topic"]["Value"] = posixpath.join(node, camera_name, output)
    header = "# Written by segment.launch.py from seg_node.rviz for this launch's topics.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def rviz(context: LaunchContext, config_folder: str) -> list:
    """RViz 2 on the first camera's input, overlay and colour mask, where rviz2 is installed."""
    if not boolean(context, "rviz"):
        return []
    if rviz_executable() is None:
        get_logger("segment.launch.py").warning(
            "rviz:=true, but rviz2 is not installed (no rviz2 package in AMENT_PREFIX_PATH, none on PATH); "
            "starting seg_node without RViz. Install it with `sudo apt install ros-$ROS_DISTRO-rviz2`."
        )
        return []
    cameras = cameras_argument(context)
    if cameras:  # a topic of the cameras parameter is remapped by no one: the node reads it as given
        camera_topic = cameras[0]
    else:
        camera_topic = argument(context, "camera_topic") or DEFAULT_CAMERA
    camera_name = (cameras[0] if cameras else DEFAULT_CAMERA).removesuffix(COMPRESSED_SUFFIX).lstrip("~").strip("/")
    text = rviz_config(
        os.path.join(config_folder, "seg_node.rviz"), argument(context, "namespace"), camera_topic, camera_name
    )
    config_file, removal = file_for_this_launch(text, ".rviz")
    return [Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", config_file]), removal]


def ignore_further_interrupts(event: object, context: LaunchContext) -> None:
    """Once launch shuts down, ``ros2 launch`` ignores further Ctrl-C: launch itself only logs and ignores them
    while its event loop runs, but one that lands after the loop has ended (the node already gone) finds the
    default action restored by Python's finalization and kills the process (exit status -2). SIG_IGN is the
    one disposition finalization keeps."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    config = os.path.join(share, "config")
    profile = os.environ.get(PROFILE_VARIABLE) or os.path.join(config, "fastdds_shm.xml")
    return LaunchDescription([
        DeclareLaunchArgument("weights", default_value="", description="weights .safetensors or shipped name"),
        DeclareLaunchArgument("backend", default_value="", description="auto, torch2trt, torch or onnxruntime"),
        DeclareLaunchArgument(
            "camera_topic",
            default_value=DEFAULT_CAMERA,
            description="topic the input `image` reads; `camera_info` is remapped to its sibling camera_info",
        ),
        DeclareLaunchArgument(
            "cameras", default_value="", description="several input topics, comma-separated (a list parameter)"
        ),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(config, "seg_node.yaml"), description="parameter YAML"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (node parameter)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error or fatal"),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="configure and activate the lifecycle node at start; false: stay unconfigured for a manager",
        ),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz 2 with seg_node.rviz"),
        SetEnvironmentVariable(PROFILE_VARIABLE, profile),
        OpaqueFunction(function=segmentation_node),
        OpaqueFunction(function=rviz, args=[config]),
        RegisterEventHandler(OnShutdown(on_shutdown=ignore_further_interrupts)),
    ])
