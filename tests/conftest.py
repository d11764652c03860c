"""Shared fixtures: the CamVid data set beside the project (../shared/datasets/camvid)."""

from __future__ import annotations

import os
from pathlib import Path

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
