"""Shared fixtures: the CamVid data set beside the project (../shared/datasets/camvid); the engine tests'
small random weights and smooth frames."""

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


# ---- the engine's tests (test_engine, test_pipeline, test_node): small random weights and smooth frames

ENGINE_NETWORK_SIZE = (96, 128)  # the training size make_weights writes into the weights' JSON
ENGINE_VARIANTS = {"cgnet": {"m": 3, "n": 21}, "contextnet": {"context_scale": 4, "width": 1.0}}


def _make_frames(count: int, height: int = 120, width: int = 160, seed: int = 0) -> list:
    """Smooth random uint8 frames (blobs, not noise), so labels form regions like in real images."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    generator = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        coarse = generator.integers(0, 256, (1, 3, height // 8, width // 8)).astype(np.float32)
        smooth = F.interpolate(torch.from_numpy(coarse), size=(height, width), mode="bilinear", align_corners=False)
        frames.append(np.ascontiguousarray(smooth[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()))
    return frames


def _make_weights(folder: Path, architecture: str, seed: int = 0) -> Path:
    """Random weights whose BatchNorm statistics come from frames, so folding them matters and the
    activations keep their scale (fresh statistics shrink them until one class wins everywhere)."""
    import numpy as np
    import torch

    from seg_node.models import build_model
    from seg_node.weights import SegClass, WeightsInfo, save_weights

    torch.manual_seed(seed)
    model = build_model(architecture, 11)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        frames = torch.from_numpy(np.stack(_make_frames(4, *ENGINE_NETWORK_SIZE, seed=seed))).permute(0, 3, 1, 2)
        model.train()(frames.float() / 64.0 - 2.0)
    model.eval()
    info = WeightsInfo(
        architecture=architecture,
        variant=ENGINE_VARIANTS[architecture],
        classes=[SegClass(i, f"class{i}", (20 * i, 255 - 20 * i, 7 * i)) for i in range(11)],
        mean=(104.0, 112.0, 120.0),
        std=(58.0, 57.0, 59.0),
        input_size=ENGINE_NETWORK_SIZE,
        dataset="unit-test",
        splits=["train"],
    )
    return save_weights(model, info, folder / f"{architecture}_{seed}.safetensors")


@pytest.fixture(scope="session")
def make_frames():
    """``make_frames(count, height=120, width=160, seed=0)``: a list of smooth random uint8 H x W x 3 frames."""
    return _make_frames


@pytest.fixture(scope="session")
def make_weights():
    """``make_weights(folder, architecture, seed=0)``: random 11-class weights at 96x128, saved; their path."""
    return _make_weights


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("engine_weights")
    for architecture in ENGINE_VARIANTS:
        _make_weights(folder, architecture)
    return folder


@pytest.fixture(scope="session")
def weights_path(weights_dir):
    """``weights_path(architecture)``: the path of the session's seed-0 weights of that architecture."""
    return lambda architecture: weights_dir / f"{architecture}_0.safetensors"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engine_cache")


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


@pytest.fixture
def tiny_camvid(tmp_path, camvid_root) -> dict[str, str]:
    """Four CamVid train frames and one val frame as list files in tmp_path."""
    train = (camvid_root / "train.txt").read_text().splitlines()[:4]
    val = (camvid_root / "val.txt").read_text().splitlines()[:1]
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(val) + "\n")
    return {"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt"), "data": str(camvid_root)}
