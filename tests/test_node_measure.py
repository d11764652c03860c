"""The measurement program runs between real processes (small frames, so it stays quick)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ros_helpers as ros


def test_dds_delivery_between_processes_is_counted(tmp_path):
    result_path = tmp_path / "dds.json"
    subprocess.run(
        [sys.executable, "-m", "seg_node.ros_tools.measure", "dds", "--size", "64", "48",
         "--rate", "50", "--count", "20",
         "--json", str(result_path)],
        env=ros.node_environment(ros.domain_id(offset=50)), check=True, timeout=300, capture_output=True,
    )
    (result,) = json.loads(result_path.read_text())
    assert result["frame"].startswith("64x48 rgb8") and result["profile"].endswith("fastdds_shm.xml")
    assert result["published"] == 20
    assert 0 < result["received"] <= 20


@pytest.mark.slow  # a node process
def test_node_flat_out_is_measured_against_the_engine_alone_in_the_same_run(tmp_path, camvid_root):
    result_path = tmp_path / "node.json"
    completed = subprocess.run(
        [sys.executable, "-m", "seg_node.ros_tools.measure", "node", "--camvid", str(camvid_root), "--frames", "2",
         "--rate", "0", "--seconds", "3", "--warmup", "1", "--backend", "onnxruntime", "--threads", "1",
         "--network-size", "96", "128", "--json", str(result_path)],
        env=ros.node_environment(ros.domain_id(offset=61)), timeout=300, capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (result,) = json.loads(result_path.read_text())
    baseline = result["engine_alone"]
    assert baseline["backend"] == "onnxruntime" and baseline["sync_fps"] > 0 and baseline["pipelined_fps"] > 0
    assert result["labels_received"] > 1 and result["output_fps"] > 0
    best = max(baseline["sync_fps"], baseline["pipelined_fps"])
    assert result["node_vs_engine"] == pytest.approx(result["output_fps"] / best)
    assert "onnxruntime" in result["engine"]  # the node built the engine it was asked for
