"""The ament_python package: metadata agrees, and an install puts files where colcon expects them."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile

import pytest
from conftest import PACKAGE_ROOT, REPO_ROOT


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
