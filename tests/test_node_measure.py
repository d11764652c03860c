"""The measurement program runs between real processes (small frames, so it stays quick)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import pytest
import ros_helpers as ros

from seg_node.cli.measure import frame_size
from seg_node.ros_tools.measure import STAGES, format_table, publish_in_flight

MEASURE = [sys.executable, "-m", "seg_node.cli.measure"]


def test_dds_delivery_between_processes_is_counted(tmp_path):
    result_path = tmp_path / "dds.json"
    subprocess.run(
        [*MEASURE, "dds", "--size", "64", "48", "--rate", "50", "--count", "20", "--json", str(result_path)],
        env=ros.node_environment(ros.domain_id(offset=50)), check=True, timeout=300, capture_output=True,
    )
    (result,) = json.loads(result_path.read_text())
    assert result["frame"].startswith("64x48 rgb8") and result["profile"].endswith("fastdds_shm.xml")
    assert result["published"] == 20
    assert 0 < result["received"] <= 20


def test_frame_sizes_are_width_by_height_and_checked():
    assert frame_size("1920x1080") == (1920, 1080)
    for text in ("1920", "axb", "8x8", "1920x9000"):
        with pytest.raises(argparse.ArgumentTypeError, match="frame size"):
            frame_size(text)


@pytest.mark.slow  # a node process and a floor process
def test_capacity_rows_hold_node_engine_floor_and_stages_from_one_run(tmp_path, camvid_root):
    result_path = tmp_path / "node.json"
    completed = subprocess.run(
        [*MEASURE, "node", "--camvid", str(camvid_root), "--frames", "2", "--frame-size", "160x120",
         "--outputs", "label", "all", "--network-label-floor", "--rate", "0", "--seconds", "4", "--rounds", "2",
         "--warmup", "1",
         "--backend", "onnxruntime", "--threads", "1", "--network-size", "96", "128", "--json", str(result_path)],
        env=ros.node_environment(ros.domain_id(offset=61)), timeout=400, capture_output=True, text=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    rows = json.loads(result_path.read_text())
    assert [(r["frame_size"], r["outputs"]) for r in rows] == [("160x120", "label"), ("160x120", "all")]
    for result in rows:
        baseline = result["engine_alone"]
        assert baseline["backend"] == "onnxruntime" and baseline["sync_fps"] > 0 and baseline["pipelined_fps"] > 0
        assert baseline["fps"] == max(baseline["sync_fps"], baseline["pipelined_fps"])
        assert result["node"]["received"] > 1 and result["node_fps"] > 0
        assert result["node_vs_engine"] == pytest.approx(result["node_fps"] / result["engine_fps"])
        # the row is the round of median ratio; with two rounds, the higher of the two
        assert len(result["rounds"]) == 2
        assert result["node_vs_engine"] == max(measured["node_vs_engine"] for measured in result["rounds"])
        assert result["own_ms"] == pytest.approx(1e3 / result["node_fps"] - 1e3 / result["engine_fps"])
        for floor in ("floor", "raw_floor", "network_label_floor"):
            assert result[floor]["received"] > 1
            assert result[f"{floor}_ms"] == pytest.approx(1e3 / result[f"{floor}_fps"])
        assert result["own_vs_floor"] == pytest.approx(result["own_ms"] / result["floor_ms"])
        assert result["own_vs_raw_floor"] == pytest.approx(result["own_ms"] / result["raw_floor_ms"])
        assert set(STAGES) <= set(result["stages_ms"]) and all(v >= 0 for v in result["stages_ms"].values())
        assert "onnxruntime" in result["node"]["node_diagnostics"]["engine"]  # the node built the engine asked
    camera = rows[1]["node"]["node_diagnostics"]["camera"]
    assert int(camera["published_overlay"]) > 0 and int(camera["published_color_mask"]) > 0  # "all" subscribed
    assert format_table(rows) in completed.stdout


def test_flat_out_keeps_the_frames_in_flight_and_forgets_the_lost_ones():
    """A stand-in node answers frames in order after 5 ms and loses every third: the loop keeps two awaited,
    counts a frame older than the newest answer as lost at once, and never waits a second for one."""
    lock = threading.Condition()
    state = {"newest": -1, "in_flight": 0, "most_in_flight": 0}
    pending: list[int] = []

    def publish(index: int) -> int:
        with lock:
            pending.append(index)
            state["in_flight"] = len([i for i in pending if i > state["newest"]])
            state["most_in_flight"] = max(state["most_in_flight"], state["in_flight"])
        return index

    def node() -> None:
        while not stop.is_set():
            time.sleep(0.005)
            with lock:
                if pending:
                    index = pending.pop(0)
                    if index % 3 != 2:  # lost: no label ever comes back
                        state["newest"] = index
                        lock.notify_all()

    def answered_by(stamp: int, timeout: float) -> int:
        with lock:
            lock.wait_for(lambda: state["newest"] >= stamp, timeout)
            return state["newest"]

    stop = threading.Event()
    worker = threading.Thread(target=node, daemon=True)
    worker.start()
    try:
        published = publish_in_flight(2, 1.0, publish, answered_by)
    finally:
        stop.set()
        worker.join()
    assert state["most_in_flight"] <= 2
    assert published > 100  # about 1 s / 5 ms frames; a lost frame awaited for a second would leave ~2
