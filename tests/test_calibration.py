"""int8 calibration data without a GPU: folder and rosbag2 sources, host uint8 frames, the dataset, the cache key."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from seg_node.engine import EngineConfigError, EngineError
from seg_node.engine.cache import EngineCache
from seg_node.engine.calibration import (
    CALIBRATION_FRAMES,
    CalibrationDataset,
    CalibrationSource,
    calibration_table_key,
    load_calibration_frames,
    parse_calibration_source,
)
from seg_node.engine.graph import Preprocess
from seg_node.recording.rosbag import BagWriter, compressed_message, image_message
from seg_node.weights import read_info

TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"
START_NS = 1_700_000_000 * 1_000_000_000


@pytest.fixture
def image_folder(tmp_path, make_frames):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = make_frames(5, 40, 56)
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    return folder, frames


@pytest.fixture
def bag(tmp_path, make_frames):
    path = tmp_path / "drive"
    frames = make_frames(5, 40, 56, seed=3)
    with BagWriter(path) as writer:
        for index, frame in enumerate(frames):
            stamp = START_NS + index * 100_000_000
            writer.write(TOPIC, image_message(frame, "rgb8", stamp, "camera"), stamp)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.write(COMPRESSED_TOPIC, compressed_message(jpeg.tobytes(), "jpeg", stamp, "camera"), stamp)
    return path, frames


def test_a_folder_gives_host_uint8_rgb_frames_spread_evenly(image_folder):
    folder, frames = image_folder
    source = parse_calibration_source(str(folder))
    assert source == CalibrationSource(folder) and not source.is_bag
    loaded = load_calibration_frames(source, count=2)
    assert len(loaded) == 2
    for frame in loaded:
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (40, 56, 3)
    # 5 files, 2 wanted: every second one, in name order; PNG keeps the pixels, channels come back as RGB
    assert np.array_equal(loaded[0], frames[0]) and np.array_equal(loaded[1], frames[2])
    assert len(load_calibration_frames(source)) == 5  # fewer than CALIBRATION_FRAMES: all of them


def test_a_bag_topic_gives_host_uint8_rgb_frames(bag):
    path, frames = bag
    source = parse_calibration_source(f"{path}:{TOPIC}")
    assert source == CalibrationSource(path, TOPIC) and source.is_bag
    loaded = load_calibration_frames(source, count=3)
    assert len(loaded) == 3 and all(f.dtype == np.uint8 and f.shape == (40, 56, 3) for f in loaded)
    assert all(f.flags.owndata and f.flags.c_contiguous for f in loaded)  # copies, not views of the messages
    assert np.array_equal(loaded[0], frames[0]) and np.array_equal(loaded[1], frames[1])
    jpeg = load_calibration_frames(parse_calibration_source(f"{path}:{COMPRESSED_TOPIC}"), count=5)
    assert len(jpeg) == 5 and np.abs(jpeg[4].astype(int) - frames[4]).mean() < 8  # JPEG: close, in RGB order


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("/no/such/folder", "neither an existing folder nor PATH:TOPIC"),
    ("/no/such/bag:/camera/image_raw", "does not exist"),
])
def test_bad_calibration_specs_say_what_to_give(text, message):
    with pytest.raises(EngineConfigError, match=message):
        parse_calibration_source(text)


def test_a_bag_needs_its_topic_and_the_topic_must_be_there(bag, image_folder, tmp_path):
    path, _ = bag
    with pytest.raises(EngineConfigError, match="name the image topic"):
        parse_calibration_source(str(path))
    with pytest.raises(EngineConfigError, match="not a rosbag2 recording"):
        parse_calibration_source(f"{image_folder[0]}:/camera/image_raw")
    with pytest.raises(EngineConfigError, match="/camera/image_raw"):  # lists the topics there are
        load_calibration_frames(parse_calibration_source(f"{path}:/camera/left"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match="no images"):
        load_calibration_frames(parse_calibration_source(str(empty)))


def test_the_identity_follows_the_files(image_folder, bag):
    folder, _ = image_folder
    source = CalibrationSource(folder)
    first = source.identity()
    assert source.identity() == first  # stable
    assert CalibrationSource(folder).identity() == first
    image = folder / "001.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = source.identity()
    assert touched != first
    (folder / "005.jpg").write_bytes(image.read_bytes())
    assert source.identity() not in (first, touched)
    (folder / "readme.md").write_text("ignored: not an image")
    assert CalibrationSource(folder).identity() == source.identity()
    path, _ = bag
    assert CalibrationSource(path, TOPIC).identity() != CalibrationSource(path, COMPRESSED_TOPIC).identity()


def test_the_table_is_cached_beside_the_engines_keyed_by_the_data(image_folder, tmp_path):
    folder, _ = image_folder
    cache = EngineCache(tmp_path / "engines")
    source = CalibrationSource(folder)

    def table(data: CalibrationSource = source, weights: str = "a" * 64, size: tuple[int, int] = (96, 128)):
        key = calibration_table_key(data, "cgnet", weights, size, "10.3.0")
        return cache.path_for(key, f"cgnet_{size[0]}x{size[1]}_int8", ".calib")

    path = table()
    assert path.parent == cache.folder and path.suffix == ".calib" and path == table()
    key = calibration_table_key(source, "cgnet", "a" * 64, (96, 128), "10.3.0")
    assert key["frames"] == CALIBRATION_FRAMES and "gpu" not in key and "torch2trt" not in key
    assert table(weights="b" * 64) != path and table(size=(64, 96)) != path
    (folder / "new.png").write_bytes((folder / "000.png").read_bytes())
    assert table(CalibrationSource(folder)) != path  # other data: calibrate again


def test_the_dataset_uploads_one_preprocessed_frame_at_a_time_into_one_buffer(weights_path, make_frames):
    info = read_info(weights_path("contextnet"))
    preprocess = Preprocess(info, (48, 64))
    frames = make_frames(3, 60, 80)
    messages = []
    dataset = CalibrationDataset(frames, preprocess, (48, 64), "cpu", messages.append)
    assert len(dataset) == 3
    address = dataset.buffer.data_ptr()
    for index, frame in enumerate(frames):
        (item,) = dataset[index]
        assert item.data_ptr() == address and item.is_contiguous() and item.shape == (1, 3, 48, 64)
        assert torch.equal(item, preprocess(torch.from_numpy(frame)[None]).contiguous())
    assert messages == ["calibrating int8: 1/3", "calibrating int8: 2/3", "calibrating int8: 3/3"]
    assert all(f.dtype == np.uint8 for f in dataset.frames)  # the frames stay on the host as uint8
    with pytest.raises(IndexError):
        dataset[3]
