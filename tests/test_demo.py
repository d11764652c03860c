"""`make demo` end to end on a slice: player, node and recorder as processes over Fast DDS, shipped weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from seg_node.weights import find_weights


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_runs_end_to_end_on_a_slice(tmp_path):
    weights = find_weights("cgnet_camvid")  # the shipped weights: the demo is what a user runs first
    out = tmp_path / "demo"
    domain_id = 1 + (os.getpid() + 75) % 100  # apart from the other tests of this run; below 102 (ephemeral ports)
    command = [sys.executable, "-m", "seg_node.cli.demo", "--count", "8", "--network-size", "180", "240",
               "--out", str(out), "--domain-id", str(domain_id)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[diagnostics] /seg_node: camera camera/image_raw" in done.stdout  # printed live by the recorder
    assert "mIoU" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["weights"] == str(weights)
    assert report["frames"]["published"] == 8
    assert 1 <= report["frames"]["segmented"] <= 8
    assert report["frames"]["scored"] == report["frames"]["segmented"]
    assert 0.0 <= report["accuracy"]["miou"] <= 1.0
    assert report["diagnostics"]["/seg_node: engine"]["input_resolution"] == "240x180"
    assert report["latency_over_dds_ms"]["p50"] > 0
    assert (out / report["files"]["video"]).stat().st_size > 1000
    assert len(list((out / "overlays").glob("*.png"))) >= 1
    assert "mIoU" in (out / "report.md").read_text()
    # the bundled recording is CamVid val: the report says whether the weights saw those frames
    training = report["weights_training"]
    assert training["saw_these_frames"] == ("val" in training["splits"])
    assert training["note"] in done.stdout and training["note"].capitalize() in (out / "report.md").read_text()
