"""The measurement program runs between real processes (small frames, so it stays quick)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import PACKAGE_ROOT


def test_dds_delivery_between_processes_is_counted(tmp_path):
    environment = {
        **os.environ,
        "ROS_DOMAIN_ID": str(1 + (os.getpid() + 50) % 100),  # domains above 101 use ephemeral ports
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result_path = tmp_path / "dds.json"
    subprocess.run(
        [sys.executable, "-m", "seg_node.ros_tools.measure", "dds", "--size", "64", "48",
         "--rate", "50", "--count", "20",
         "--json", str(result_path)],
        env=environment, check=True, timeout=300, capture_output=True,
    )
    (result,) = json.loads(result_path.read_text())
    assert result["frame"].startswith("64x48 rgb8") and result["profile"].endswith("fastdds_shm.xml")
    assert result["published"] == 20
    assert 0 < result["received"] <= 20
