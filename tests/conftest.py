"""Shared fixtures: the CamVid data set beside the project (../shared/datasets/camvid)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO_ROOT / "ros2_ws" / "src" / "seg_node"
CAMVID_ROOT = REPO_ROOT.parent / "shared" / "datasets" / "camvid"

# Fast DDS reads its XML profiles once per process, at the first participant: every test module that
# talks DDS in this process must see the package's profile (a shared-memory segment large enough for
# full camera frames), as the launch file gives it to the node, whichever module creates a participant first.
os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(PACKAGE_ROOT / "config" / "fastdds_shm.xml"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    if not (CAMVID_ROOT / "train.txt").is_file():
        pytest.fail(f"CamVid is expected at {CAMVID_ROOT} (the project's ../shared); see README")
    return CAMVID_ROOT


@pytest.fixture(scope="session")
def camvid_pairs(camvid_root: Path) -> list[tuple[Path, Path]]:
    """The (image, label) paths of the CamVid val list, in order."""
    pairs = []
    for line in (camvid_root / "val.txt").read_text().splitlines():
        image, label = line.split()
        pairs.append((camvid_root / image, camvid_root / label))
    return pairs


@pytest.fixture
def write_foreign_bag() -> Callable[..., Path]:
    """``write(path, frames, storage="sqlite3")``: a bag written by rosbags itself on ``/cam/image``: bgr8
    Images with padded rows, the way some camera drivers send them."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from seg_node.recording.rosbag import IMAGE, image_message, typestore

    def write(path: Path, frames: list[np.ndarray], storage: str = "sqlite3") -> Path:
        store = typestore()
        plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
        with Writer(path, version=9, storage_plugin=plugin) as writer:
            connection = writer.add_connection("/cam/image", IMAGE, typestore=store)
            for index, frame in enumerate(frames):
                height, width = frame.shape[:2]
                padded = np.zeros((height, width * 3 + 16), np.uint8)
                padded[:, : width * 3] = frame.reshape(height, -1)
                message = image_message(padded, "bgr8", 1_000 + index * 50_000_000, "cam")
                message.width, message.step = width, width * 3 + 16
                writer.write(connection, 1_000 + index * 50_000_000, store.serialize_cdr(message, IMAGE))
        return path

    return write
