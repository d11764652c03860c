"""Shared fixtures: the CamVid data set beside the project (../shared/datasets/camvid)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO_ROOT / "ros2_ws" / "src" / "seg_node"
CAMVID_ROOT = REPO_ROOT.parent / "shared" / "datasets" / "camvid"


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
