"""launch/segment.launch.py: its arguments, node, remapping and installed files.

Where the ROS ``launch`` and ``launch_ros`` packages are absent (a plain virtual environment), the
file's structure is read with ``ast``; where they are present, the description itself is built.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml
from conftest import PACKAGE_ROOT, REPO_ROOT

LAUNCH_FILE = REPO_ROOT / "launch" / "segment.launch.py"
CONFIG = PACKAGE_ROOT / "config"
ARGUMENTS = {"weights", "backend", "camera_topic", "cameras", "params_file", "namespace", "rviz"}


def ros_module_present(name: str) -> bool:
    """The ROS package ``name``, not the repository's launch/ folder that shadows it on sys.path."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None and REPO_ROOT not in Path(spec.origin).parents


LAUNCH_PRESENT = ros_module_present("launch") and ros_module_present("launch_ros")


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text())


def literal(expression: ast.expr, tree: ast.Module) -> object:
    """A literal, or a module-level constant holding one (``package=PACKAGE``)."""
    if isinstance(expression, ast.Name):
        for statement in tree.body:
            if isinstance(statement, ast.Assign) and any(t.id == expression.id for t in statement.targets):
                return ast.literal_eval(statement.value)
    return ast.literal_eval(expression)


def test_the_launch_file_is_installed_beside_the_package():
    assert (PACKAGE_ROOT / "launch" / LAUNCH_FILE.name).resolve() == LAUNCH_FILE.resolve()
    setup = (PACKAGE_ROOT / "setup.py").read_text()
    assert 'share_files("launch", "*.launch.py")' in setup and 'f"{SHARE}/launch"' in setup
    assert 'share_files("config", "*")' in setup


def test_declares_every_argument_with_a_description(tree):
    declared = {}
    for call in calls(tree, "DeclareLaunchArgument"):
        declared[ast.literal_eval(call.args[0])] = call
        assert keyword(call, "description") is not None
    assert set(declared) == ARGUMENTS
    assert ast.literal_eval(keyword(declared["rviz"], "default_value")) == "false"
    assert ast.literal_eval(keyword(declared["camera_topic"], "default_value")) == "image"


def test_starts_seg_node_with_params_file_and_the_camera_remapping(tree):
    nodes = {literal(keyword(call, "package"), tree): call for call in calls(tree, "Node")}
    node = nodes["seg_node"]
    assert literal(keyword(node, "executable"), tree) == "seg_node"
    remappings = keyword(node, "remappings")
    (pair,) = remappings.elts
    assert ast.literal_eval(pair.elts[0]) == "image"
    assert ast.unparse(pair.elts[1]) == "LaunchConfiguration('camera_topic')"
    assert "LaunchConfiguration('params_file')" in ast.unparse(keyword(node, "parameters"))
    rviz = nodes["rviz2"]
    assert "seg_node.rviz" in ast.unparse(keyword(rviz, "arguments"))
    assert "LaunchConfiguration('rviz')" in ast.unparse(keyword(rviz, "condition"))


def test_named_config_files_exist_and_fit_the_node(tree):
    text = ast.unparse(tree)
    for name in ("seg_node.yaml", "fastdds_shm.xml", "seg_node.rviz"):
        assert f"'{name}'" in text and (CONFIG / name).is_file(), name
    assert literal(ast.Name("PROFILE_VARIABLE"), tree) == "FASTRTPS_DEFAULT_PROFILES_FILE"
    assert "SetEnvironmentVariable(PROFILE_VARIABLE, profile)" in text
    rviz = yaml.safe_load((CONFIG / "seg_node.rviz").read_text())
    topics = {d["Name"]: d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {
        "Input": "/image",
        "Overlay": "/seg_node/image/overlay",
        "Color mask": "/seg_node/image/color_mask",
    }


@pytest.mark.skipif(not LAUNCH_PRESENT, reason="the ROS packages launch and launch_ros are not installed")
def test_the_description_builds_with_launch(monkeypatch):
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    try:
        get_package_share_directory("seg_node")
    except (PackageNotFoundError, ValueError, KeyError) as error:
        pytest.skip(f"seg_node is not installed into an ament prefix: {error}")
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    description = get_launch_description_from_python_launch_file(str(LAUNCH_FILE))
    arguments = {a.name: a for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert set(arguments) == ARGUMENTS
    context = LaunchContext()
    for name, argument in arguments.items():
        context.launch_configurations[name] = {"cameras": "/a, /b/compressed", "weights": "w.safetensors"}.get(
            name, "".join(s.perform(context) for s in argument.default_value)
        )
    (opaque,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque.execute(context)
    assert node.node_package == "seg_node" and node.node_executable == "seg_node"
