"""The node's runtime dependencies are what it imports: the trainer's and the offline tools' libraries stay off it.

package.xml's exec_depends list what ``ros/`` and the layers below it import (and the launch file, and
seg-healthcheck, which the Docker images run). tqdm and matplotlib (with PIL) serve the trainer and the offline
tools (seg-train, seg-eval, seg-replay, seg-bench, the demo): requirements.txt installs them on machines that
train or evaluate. Here the node is imported, and started, with those libraries made unimportable.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import ros_helpers as ros

# the libraries a robot without the training extras lacks
TOOL_LIBRARIES = ("tqdm", "matplotlib", "PIL")
BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {TOOL_LIBRARIES!r}:
                raise ImportError(f"{{name}} is blocked: the node must not need it")
            return None

    sys.meta_path.insert(0, Blocked())
""")
DOMAIN = ros.domain_id(offset=29)
CAMERA = "/nodeps/image_raw"
LABEL = "/seg_node/image/label"


def test_the_blocker_blocks():
    script = BLOCKER + "import tqdm\n"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "tqdm is blocked" in run.stderr


def test_the_node_and_its_healthcheck_import_without_the_tool_libraries():
    script = BLOCKER + textwrap.dedent(f"""
        import seg_node.ros.node, seg_node.ros.process, seg_node.cli.healthcheck, seg_node.ros_tools.healthcheck
        from seg_node.engine import create_engine
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in {TOOL_LIBRARIES!r})
        print("loaded:", loaded)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "loaded: []" in run.stdout


@pytest.mark.slow
def test_the_node_starts_and_segments_without_the_tool_libraries(tmp_path: Path):
    script = tmp_path / "node_without_tools.py"
    script.write_text(BLOCKER + "from seg_node.ros.process import main\nmain()\n")
    command = [sys.executable, str(script), "--ros-args", "-r", f"image:={CAMERA}",
               "-r", "camera_info:=/nodeps/camera_info", "-p", "backend:=onnxruntime"]
    log = tmp_path / "node.log"
    probe = ros.Probe(DOMAIN, "nodeps_probe")
    try:
        with ros.running_group(command, ros.node_environment(DOMAIN), log) as process:
            probe.wait_for_publisher(LABEL)
            assert ros.wait_until(lambda: probe.lifecycle_state() == "active", "state active")
            sent, label = probe.send_until_labelled(CAMERA, LABEL, "nodeps_camera")
            assert label.header == sent.header
            ros.assert_clean_stop(process, log)
    finally:
        probe.close()
    assert "is blocked" not in log.read_text()
