"""Bad arguments to the node tell the truth in one line (#46 items 1-2): ROS arguments rcl refuses, a
parameter without a value, a parameter the node does not have; ``--help`` lists the parameters."""

from __future__ import annotations

import subprocess
import sys

import pytest
import rclpy
import ros_helpers as ros
from rclpy.context import Context

from seg_node.ros.node import SegmentationNode
from seg_node.ros.parameters import SPECS

DOMAIN = ros.domain_id(offset=53)
BROKEN_YAML = 'seg_node:\n  ros__parameters:\n    weights: "x\n'  # an unterminated string, as the issue has it


def run_node(*arguments: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seg_node", *arguments], env=ros.node_environment(DOMAIN),
                          capture_output=True, text=True, timeout=ros.START_S, cwd=cwd)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--params-file", "broken.yaml"], "Couldn't parse params file: '--params-file broken.yaml'"),
        (["--params-file", "missing.yaml"], "Couldn't parse params file: '--params-file missing.yaml'"),
        (["--log-level", "bogus"], "Couldn't parse log level: '--log-level bogus'"),
        (["-p"], "Couldn't parse trailing -p flag"),
        (["-r", "bad"], "Couldn't parse remap rule: '-r bad'"),
    ],
)
def test_ros_arguments_that_rcl_refuses_are_one_line_and_status_2(arguments, expected, tmp_path):
    (tmp_path / "broken.yaml").write_text(BROKEN_YAML)
    result = run_node("--ros-args", *arguments, cwd=tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert output.splitlines() == [output] and output.startswith("seg_node: bad ROS arguments: "), output
    assert expected in output and ", at /" not in output  # rcl's source locations are left out


def test_an_argument_before_ros_args_is_a_usage_error():
    result = run_node("--bogus")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "seg_node: unknown argument '--bogus': ROS arguments follow --ros-args (--help lists the parameters)"
    ]


def test_help_prints_the_usage_and_every_parameter_and_does_not_start_the_node():
    result = run_node("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ros2 run seg_node seg_node") and not result.stderr
    parameters = result.stdout.split("\nparameters:\n", 1)[1].splitlines()
    listed = [line.split()[0] for line in parameters if line.startswith("  ") and not line.startswith("   ")]
    assert listed == list(SPECS)
    assert "[INFO]" not in result.stdout  # no node was created


@pytest.fixture
def context():
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    yield context
    rclpy.try_shutdown(context=context)


def node_with(context: Context, *arguments: str) -> SegmentationNode:
    return SegmentationNode(context=context, cli_args=["--ros-args", *[a for arg in arguments for a in ("-p", arg)]])


def test_an_empty_list_names_the_parameter_when_configure_fails(context):
    node = node_with(context, "cameras:=[]")
    try:
        node.trigger_configure()
        assert node.failure.startswith("cameras: no value (ROS 2 gives an empty list [] none); e.g. cameras:=[image]")
        assert node.lifecycle_state == "unconfigured"
    finally:
        node.close()
        node.destroy_node()


def test_parameters_the_node_does_not_have_are_warned_about_with_the_closest_names(context, capfd):
    node = node_with(context, "network_size:=[0, 0]", "wieghts:=x.safetensors", "zzz:=1", "overlay_alpha:=0.3",
                     "use_sim_time:=false", "qos_overrides./a.publisher.depth:=3")
    node.destroy_node()
    warnings = [line for line in capfd.readouterr().err.splitlines() if "is not one of seg_node's" in line]
    assert [line.split("[seg_node]: ")[1] for line in warnings] == [
        "parameter network_size is not one of seg_node's and is ignored; did you mean network_height and "
        "network_width? (python -m seg_node --help lists them)",
        "parameter wieghts is not one of seg_node's and is ignored; did you mean weights? "
        "(python -m seg_node --help lists them)",
        "parameter zzz is not one of seg_node's and is ignored (python -m seg_node --help lists them)",
    ]
