"""The ament_python package: metadata agrees, and an install puts files where colcon expects them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import pytest
from conftest import PACKAGE_ROOT, REPO_ROOT
from test_layers import imported_modules as seg_node_imports


def _wheel_files(tmp_path) -> tuple[str, set[str]]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(PACKAGE_ROOT),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("seg_node-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return wheel.name, set(archive.namelist())


def test_package_xml_and_setup_py_agree(tmp_path):
    manifest = ElementTree.parse(PACKAGE_ROOT / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.find("export/build_type").text == "ament_python"
    name, version = manifest.findtext("name"), manifest.findtext("version")
    metadata = subprocess.run(
        [sys.executable, "setup.py", "--name", "--version"],
        cwd=PACKAGE_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert metadata[-2:] == [name, version]


def test_install_layout_is_what_colcon_expects(tmp_path):
    wheel_name, files = _wheel_files(tmp_path)
    data = wheel_name.split("-py")[0] + ".data/data/"
    assert data + "share/ament_index/resource_index/packages/seg_node" in files
    assert data + "share/seg_node/package.xml" in files
    for folder in ("launch", "config", "weights"):
        expected = sorted(p.name for p in (REPO_ROOT / "ros2_ws/src/seg_node" / folder).iterdir() if p.is_file())
        installed = sorted(f.rsplit("/", 1)[1] for f in files if f.startswith(data + f"share/seg_node/{folder}/"))
        assert installed == expected, folder
    assert "seg_node/models/cgnet.py" in files
    assert not any(f.startswith(("tests/", "test/")) for f in files)


def test_setup_cfg_puts_executables_where_ros2_run_looks():
    text = (PACKAGE_ROOT / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/seg_node" in text
    assert "script_dir=$base/lib/seg_node" in text


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ", 1)[0], "the README must start with the test command"
    ci = REPO_ROOT / ".ci" / "run"
    if not ci.is_file():  # an export of the package without the repository's CI folder
        pytest.skip(f"{ci} is not in this checkout")
    commands = [line.strip() for line in ci.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert "make test" in commands, f"{ci} must run the README's test command, runs {commands}"


# Imported top-level modules that are not ROS packages: Python libraries with their rosdep key, or None for
# those without one (pip or the Docker images provide them; package.xml says so in a comment).
PYTHON_LIBRARIES = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "PIL": "python3-pil",
    "torch": "python3-pytorch-pip",
    "safetensors": None,
    "onnx": None,
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
    "lz4": None,  # rosbags' own dependency: MCAP chunks compressed with lz4
    "backports": None,  # backports.zstd, rosbags' own dependency before Python 3.14
    "compression": None,  # compression.zstd, the standard library's from Python 3.14
    "torch2trt": None,  # Jetson image only
    "tensorrt": None,  # Jetson image only
}
# ROS packages imported as modules of the same name. A module ending in _msgs/_srvs/_interfaces is a ROS
# message package too and needs no entry here.
ROS_PACKAGES = {"rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py"}
# Keys of rosdep's python.yaml (ros/rosdistro), checked there by tests/test_rosdep_keys.py.
ROSDEP_KEYS = {"python3-numpy", "python3-opencv", "python3-yaml", "python3-tqdm", "python3-matplotlib", "python3-pil",
               "python3-pytest", "python3-pytorch-pip", "python3-onnxruntime-pip", "python3-rosbags-pip"}
LAUNCH_FILES = sorted((REPO_ROOT / "launch").glob("*.launch.py"))


def manifest_dependencies(*tags: str) -> set[str]:
    manifest = ElementTree.parse(PACKAGE_ROOT / "package.xml").getroot()
    return {element.text.strip() for tag in tags for element in manifest.iter(tag)}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def is_ros_package(module: str) -> bool:
    return module in ROS_PACKAGES or module.endswith(("_msgs", "_srvs", "_interfaces"))


# What the robot runs: the node (ros2 run, python -m seg_node, the launch file) and the Docker images' healthcheck.
RUNTIME_ROOTS = ("seg_node.ros.process", "seg_node.__main__", "seg_node.cli.healthcheck")


def module_path(name: str) -> Path | None:
    path = PACKAGE_ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def runtime_sources() -> set[Path]:
    """The package's modules the node can import at run time (functions' imports included), and the launch files."""
    seen: set[Path] = set()
    todo = list(RUNTIME_ROOTS)
    while todo:
        name = todo.pop()
        path = module_path(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:end]) for end in range(2, len(parts))]  # the packages' __init__ run first
        for _, imported in seg_node_imports(path):
            parts = imported.split(".")
            if parts[0] == "seg_node":
                while len(parts) > 1 and module_path(".".join(parts)) is None:  # from .x import name
                    parts = parts[:-1]
                todo.append(".".join(parts))
    return seen | set(LAUNCH_FILES)


def test_package_xml_declares_every_ros_package_the_code_imports():
    sources = sorted((PACKAGE_ROOT / "seg_node").rglob("*.py")) + LAUNCH_FILES
    assert len(sources) > 20 and LAUNCH_FILES
    declared = manifest_dependencies("exec_depend", "depend")
    missing, unknown = {}, {}
    for source in sources:
        for module in imported_modules(source) - set(sys.stdlib_module_names) - {"seg_node"}:
            where = str(source.relative_to(REPO_ROOT))
            if is_ros_package(module):
                if module not in declared:
                    missing.setdefault(module, where)
            elif module not in PYTHON_LIBRARIES:
                unknown.setdefault(module, where)
    assert not missing, f"package.xml lacks <exec_depend> for (key: first importer) {missing}"
    assert not unknown, f"classify these imports in tests/test_package.py (ROS package or library?): {unknown}"


def test_package_xml_runtime_libraries_are_what_the_node_imports():
    """exec_depend lists the libraries the node's import path needs, and no library only the tools need."""
    runtime = runtime_sources()
    assert PACKAGE_ROOT / "seg_node" / "ros" / "node.py" in runtime
    assert PACKAGE_ROOT / "seg_node" / "training" / "trainer.py" not in runtime
    needed = {PYTHON_LIBRARIES[module]: str(source.relative_to(REPO_ROOT)) for source in sorted(runtime)
              for module in imported_modules(source) if PYTHON_LIBRARIES.get(module)}
    declared = {key for key in manifest_dependencies("exec_depend", "depend") if key.startswith("python")}
    assert not needed.keys() - declared, f"package.xml lacks <exec_depend> for (key: importer) {needed}"
    assert not declared - needed.keys(), f"the node never imports these; drop them from exec_depend: " \
        f"{sorted(declared - needed.keys())}"
    assert {"python3-tqdm", "python3-matplotlib"}.isdisjoint(declared)
    requirements = (REPO_ROOT / "requirements.txt").read_text().split()
    assert {"tqdm", "matplotlib", "PyYAML"} <= set(requirements), "training machines install the tools' extras"


def test_package_xml_declares_every_package_the_launch_files_start():
    declared = manifest_dependencies("exec_depend", "depend")
    for launch_file in LAUNCH_FILES:
        tree = ast.parse(launch_file.read_text())
        constants = {
            target.id: statement.value.value
            for statement in tree.body
            if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
            for target in statement.targets
            if isinstance(target, ast.Name)
        }
        started = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "package":
                        value = keyword.value
                        started.add(constants[value.id] if isinstance(value, ast.Name) else ast.literal_eval(value))
        assert "rviz2" in started, launch_file.name
        undeclared = started - declared - {"seg_node"}
        assert not undeclared, f"{launch_file.name} starts {undeclared}, not in package.xml"


def test_non_ros_dependencies_use_valid_rosdep_keys():
    declared = manifest_dependencies("exec_depend", "depend", "test_depend", "build_depend")
    python_keys = {key for key in declared if key.startswith("python")}
    assert python_keys <= ROSDEP_KEYS, f"not a rosdep key checked here: {python_keys - ROSDEP_KEYS}"
    assert set(filter(None, PYTHON_LIBRARIES.values())) <= ROSDEP_KEYS


def test_setup_py_fails_loudly_when_the_share_links_do_not_resolve(tmp_path):
    """A copy of the package without the repository around it: launch/ and weights/ lead nowhere."""
    copy = tmp_path / "seg_node"
    copy.mkdir()
    for name in ("setup.py", "setup.cfg", "package.xml", "resource", "config", "launch", "weights"):
        source = PACKAGE_ROOT / name
        if source.is_symlink():
            (copy / name).symlink_to(source.readlink())  # relative: dangling outside the repository
        elif source.is_dir():
            shutil.copytree(source, copy / name)
        else:
            shutil.copy(source, copy / name)
    for folder in ("launch", "weights"):
        assert (PACKAGE_ROOT / folder).is_symlink() and not (copy / folder).exists()
    result = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=copy, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "ShareFolderError" in result.stderr and "launch" in result.stderr and "../../../launch" in result.stderr
    (copy / "launch").unlink()
    (copy / "launch").symlink_to(REPO_ROOT / "launch")
    result = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=copy, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "weights" in result.stderr and "ShareFolderError" in result.stderr


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts, name -> ``module:function``."""
    tree = ast.parse((PACKAGE_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            lines = ast.literal_eval(node.value)["console_scripts"]
            return dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines)
    raise AssertionError("setup.py has no entry_points")


def test_every_console_script_names_a_function_its_module_defines():
    scripts = console_scripts()
    # the node's process runs it (python -m seg_node and ros2 run alike); ros.node only defines the node
    assert scripts["seg_node"] == "seg_node.ros.process:main"
    for name, target in scripts.items():
        module, function = target.split(":")
        path = PACKAGE_ROOT.joinpath(*module.split(".")).with_suffix(".py")
        assert path.is_file(), f"{name}: {path} does not exist"
        body = ast.parse(path.read_text()).body
        defined = {node.name for node in body if isinstance(node, ast.FunctionDef)}
        defined |= {target.id for node in body if isinstance(node, ast.Assign)  # main = entry_point(...)
                    for target in node.targets if isinstance(target, ast.Name)}
        assert function in defined, f"{name}: {module} defines no {function}"
    main_module = (PACKAGE_ROOT / "seg_node" / "__main__.py").read_text()
    assert "from seg_node.ros.process import main" in main_module
