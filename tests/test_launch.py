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
ARGUMENTS = {
    "weights", "backend", "camera_topic", "cameras", "params_file", "namespace", "rviz", "use_sim_time", "log_level",
    "autostart",
}
DEFAULTS = {"rviz": "false", "camera_topic": "image", "use_sim_time": "false", "log_level": "info", "autostart": "true"}


def ros_module_present(name: str) -> bool:
    """The ROS package ``name``, not the repository's launch/ folder that shadows it on sys.path.

    Only that folder is excluded: a virtual environment inside the checkout (.venv) holds the real package.
    """
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None and REPO_ROOT / "launch" not in Path(spec.origin).parents


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
    for name, default in DEFAULTS.items():
        assert literal(keyword(declared[name], "default_value"), tree) == default, name


def test_starts_seg_node_with_params_file_and_the_camera_remappings(tree):
    nodes = {literal(keyword(call, "package"), tree): call for call in calls(tree, "Node")}
    node = nodes["seg_node"]
    assert literal(keyword(node, "executable"), tree) == "seg_node"
    remappings = keyword(node, "remappings")
    assert [ast.literal_eval(pair.elts[0]) for pair in remappings.elts] == ["image", "camera_info"]
    assert ast.unparse(keyword(node, "parameters")).startswith("[params_file")
    assert "'--log-level'" in ast.unparse(keyword(node, "ros_arguments"))
    rviz = nodes["rviz2"]
    assert "'-d'" in ast.unparse(keyword(rviz, "arguments"))


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
    except (PackageNotFoundError, ValueError, KeyError, OSError) as error:
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
    opaque, rviz = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque.execute(context)
    assert node.node_package == "seg_node" and node.node_executable == "seg_node"
    assert rviz.execute(context) == []  # rviz:=false


# --- the launch file's functions, where launch and launch_ros are installed ---------------------------------


@pytest.fixture(scope="module")
def launch_module():
    if not LAUNCH_PRESENT:
        pytest.skip("the ROS packages launch and launch_ros are not installed")
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def context_with(launch_module, **arguments: str):
    from launch import LaunchContext

    context = LaunchContext()
    defaults = {name: "" for name in ARGUMENTS} | DEFAULTS | {"params_file": str(CONFIG / "seg_node.yaml")}
    context.launch_configurations.update(defaults | arguments)
    return context


def the_node(launch_module, **arguments: str):
    node, *_ = launch_module.segmentation_node(context_with(launch_module, **arguments))
    return node


def node_parameters(node, launch_module) -> list:
    from launch_ros.utilities import evaluate_parameters

    return evaluate_parameters(context_with(launch_module), node._Node__parameters)


def resolved_remappings(node, context) -> list[tuple[str, str]]:
    from launch.utilities import perform_substitutions

    return [(perform_substitutions(context, a), perform_substitutions(context, b)) for a, b in node._Node__remappings]


@pytest.mark.parametrize(
    ("camera_topic", "camera_info"),
    [
        ("/cam/image_raw", "/cam/camera_info"),
        ("/cam/image_raw/compressed", "/cam/camera_info"),
        ("/car/front/image_rect", "/car/front/camera_info"),
        ("image", "camera_info"),
        ("front/image_raw", "front/camera_info"),
        ("/image", "/camera_info"),
    ],
)
def test_camera_info_is_remapped_beside_the_camera_topic(launch_module, camera_topic, camera_info):
    assert launch_module.camera_info_topic(camera_topic) == camera_info
    context = context_with(launch_module, camera_topic=camera_topic)
    node, *_ = launch_module.segmentation_node(context)
    assert resolved_remappings(node, context) == [("image", camera_topic), ("camera_info", camera_info)]


def test_node_parameters_and_ros_arguments(launch_module):
    node = the_node(
        launch_module, weights="contextnet_camvid", backend="onnxruntime", cameras=" /a, /b/compressed ,",
        use_sim_time="True", autostart="false", log_level="DEBUG",
    )
    params_file, overrides = node_parameters(node, launch_module)
    assert str(params_file) == str(CONFIG / "seg_node.yaml")
    assert overrides == {
        "weights": "contextnet_camvid", "backend": "onnxruntime", "cameras": ("/a", "/b/compressed"),
        "use_sim_time": True, "autostart": False,
    }
    assert node._Node__ros_arguments == ["--log-level", "debug"]
    defaults = the_node(launch_module)
    # the params file keeps the rest
    assert node_parameters(defaults, launch_module)[1] == {"use_sim_time": False, "autostart": True}
    assert defaults._Node__ros_arguments == ["--log-level", "info"]


def test_under_a_namespace_the_params_file_still_reaches_the_node(launch_module, tmp_path):
    node, cleanup = launch_module.segmentation_node(context_with(launch_module, namespace="/perception/"))
    params_file, _ = node_parameters(node, launch_module)
    copy = yaml.safe_load(Path(params_file).read_text())
    original = yaml.safe_load((CONFIG / "seg_node.yaml").read_text())
    assert copy == {"/perception/seg_node": original["seg_node"]}
    from launch.events import Shutdown

    cleanup.event_handler.handle(Shutdown(), context_with(launch_module))  # as launch does at the end
    assert not Path(params_file).exists()
    own = tmp_path / "own.yaml"
    for document in ({"/**": {"ros__parameters": {"overlay_alpha": 0.3}}},
                     {"/perception/seg_node": {"ros__parameters": {"overlay_alpha": 0.3}}}):
        own.write_text(yaml.safe_dump(document))
        (node, *rest) = launch_module.segmentation_node(
            context_with(launch_module, namespace="perception", params_file=str(own)))
        assert str(node_parameters(node, launch_module)[0]) == str(own) and not rest  # full names stay
    own.write_text(yaml.safe_dump({"seg_node": {"ros__parameters": {"overlay_alpha": 0.3}}, "/**": {}}))
    node, _ = launch_module.segmentation_node(context_with(launch_module, namespace="a/b", params_file=str(own)))
    assert yaml.safe_load(Path(node_parameters(node, launch_module)[0]).read_text()) == {
        "/a/b/seg_node": {"ros__parameters": {"overlay_alpha": 0.3}}, "/**": {}}
    assert launch_module.namespaced_parameters(str(tmp_path / "missing.yaml"), "perception") is None


@pytest.mark.parametrize(("name", "value"), [("autostart", "yes please"), ("use_sim_time", "2"), ("log_level", "loud")])
def test_bad_argument_values_are_refused_by_name(launch_module, name, value):
    with pytest.raises(ValueError, match=name):
        the_node(launch_module, **{name: value})


def test_rviz_without_rviz2_warns_and_starts_nothing(launch_module, monkeypatch, caplog):
    monkeypatch.setattr(launch_module, "rviz_executable", lambda: None)
    assert launch_module.rviz(context_with(launch_module, rviz="false"), str(CONFIG)) == []
    warnings = []
    monkeypatch.setattr(launch_module, "get_logger", lambda name: type("L", (), {"warning": warnings.append})())
    assert launch_module.rviz(context_with(launch_module, rviz="true"), str(CONFIG)) == []
    (warning,) = warnings
    assert "rviz2 is not installed" in warning and "without RViz" in warning


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"camera_topic": "/cam/image_raw"},
            ("/cam/image_raw", "/seg_node/image/overlay", "/seg_node/image/color_mask"),
        ),
        (
            {"camera_topic": "cam/image_raw/compressed", "namespace": "perception"},
            ("/perception/cam/image_raw/compressed", "/perception/seg_node/image/overlay",
             "/perception/seg_node/image/color_mask"),
        ),
        (
            {"cameras": "/front/image_raw/compressed,/rear/image_raw", "namespace": "/car/"},
            ("/front/image_raw/compressed", "/car/seg_node/front/image_raw/overlay",
             "/car/seg_node/front/image_raw/color_mask"),
        ),
    ],
)
def test_rviz_gets_a_config_with_this_launchs_topics(launch_module, monkeypatch, arguments, expected):
    monkeypatch.setattr(launch_module, "rviz_executable", lambda: "/opt/ros/jazzy/lib/rviz2/rviz2")
    context = context_with(launch_module, rviz="true", **arguments)
    node, on_shutdown = launch_module.rviz(context, str(CONFIG))
    assert node.node_package == "rviz2"
    flag, path = node._Node__arguments
    assert flag == "-d" and path != str(CONFIG / "seg_node.rviz")
    config = yaml.safe_load(Path(path).read_text())
    topics = {d["Name"]: d["Topic"]["Value"] for d in config["Visualization Manager"]["Displays"]}
    assert (topics["Input"], topics["Overlay"], topics["Color mask"]) == expected
    template = yaml.safe_load((CONFIG / "seg_node.rviz").read_text())
    for display in (*config["Visualization Manager"]["Displays"], *template["Visualization Manager"]["Displays"]):
        display["Topic"]["Value"] = None
    assert config == template  # only the topics differ
    on_shutdown.event_handler.handle(None, context)
    assert not Path(path).exists()


def test_after_shutdown_began_ctrl_c_is_ignored(launch_module):
    import signal

    before = signal.getsignal(signal.SIGINT)
    try:
        launch_module.ignore_further_interrupts(None, None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the one disposition finalization keeps
    finally:
        signal.signal(signal.SIGINT, before)
