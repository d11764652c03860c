"""Bags without ROS: seg-make-bag round trips in both storages, foreign bags, damaged bags."""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest

from seg_node.cli.make_bag import main
from seg_node.recording.make_bag import DEFAULT_LABEL_TOPIC, make_bag
from seg_node.recording.rosbag import (
    IMAGE,
    BagReader,
    BagReadError,
    TopicNotFoundError,
    UnsupportedMessageError,
    decode_image,
    decode_label,
    stamp_ns,
)

LABELS = DEFAULT_LABEL_TOPIC


def read_all(path, topics):
    with BagReader(path) as reader:
        messages = list(reader.messages(topics))
        return reader, messages


@pytest.mark.parametrize(("image_format", "storage"), [("jpeg", "mcap"), ("raw", "sqlite3")])
def test_make_bag_round_trip(tmp_path, camvid_pairs, image_format, storage):
    pairs = camvid_pairs[:3]
    bag = make_bag(tmp_path / "bag", pairs, rate_hz=10, image_format=image_format, storage=storage, progress=False)
    topic = "/camera/image_raw" + ("/compressed" if image_format == "jpeg" else "")
    reader, messages = read_all(bag, [topic, LABELS])
    assert reader.storage == storage and reader.warnings == [] and reader.read_error is None
    assert reader.counts == {topic: 3, LABELS: 3}
    images = [m for m in messages if m.topic == topic]
    labels = [m for m in messages if m.topic == LABELS]
    stamps = [stamp_ns(m.message) for m in images]
    assert stamps == [stamp_ns(m.message) for m in labels]
    assert np.diff(stamps).tolist() == [100_000_000, 100_000_000]
    for message, label_message, (image_path, label_path) in zip(images, labels, pairs, strict=True):
        if image_format == "jpeg":  # the file's own bytes: a replay decodes exactly what an evaluation reads
            assert bytes(message.message.data) == image_path.read_bytes()
        frame, order = decode_image(message.message, message.msgtype)
        expected = cv2.imread(str(image_path))
        assert np.array_equal(frame if order == "bgr" else frame[..., ::-1], expected)
        label = decode_label(label_message.message, label_message.msgtype)
        assert np.array_equal(label, cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED))


def test_make_bag_command_line(tmp_path, camvid_root, capsys):
    assert main([str(tmp_path / "bag"), "--list", str(camvid_root / "val.txt"), "--first", "5", "--count", "2",
                 "--jpeg-quality", "80", "--storage", "sqlite3"]) == 0
    assert "wrote" in capsys.readouterr().out
    with BagReader(tmp_path / "bag") as reader:
        assert reader.counts == {"/camera/image_raw/compressed": 2, LABELS: 2}
    assert main([str(tmp_path / "bag"), "--list", str(camvid_root / "val.txt"), "--count", "1"]) == 1
    assert "exists already" in capsys.readouterr().err


def test_reads_a_bag_written_by_rosbags_directly(tmp_path, write_foreign_bag):
    frames = [np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8) for i in range(3)]
    bag = write_foreign_bag(tmp_path / "foreign", frames)
    reader, messages = read_all(bag, ["/cam/image"])
    assert len(messages) == 3
    for message, frame in zip(messages, frames, strict=True):
        decoded, order = decode_image(message.message, message.msgtype)
        assert order == "bgr" and np.array_equal(decoded, frame)


def test_missing_topic_lists_the_topics_and_types_are_checked(tmp_path, camvid_pairs):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:1], progress=False)
    with BagReader(bag) as reader:
        with pytest.raises(TopicNotFoundError, match=r"(?s)/camera/nope.*/camera/image_raw/compressed.*1 messages"):
            reader.require_topic("/camera/nope", (IMAGE,))
        with pytest.raises(UnsupportedMessageError, match="CompressedImage"):
            reader.require_topic("/camera/image_raw/compressed", ("sensor_msgs/msg/PointCloud2",))


def test_truncated_mcap_yields_the_complete_records(tmp_path, camvid_pairs):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:12], progress=False)  # ~1 MB chunks: several of them
    (file,) = bag.glob("*.mcap")
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * 0.7)])
    reader, messages = read_all(bag, ["/camera/image_raw/compressed", LABELS])
    assert 0 < len(messages) < 24
    assert any("truncated" in w for w in reader.warnings)
    (bag / "metadata.yaml").unlink()  # a recorder killed before it wrote the metadata
    reader, again = read_all(bag, ["/camera/image_raw/compressed", LABELS])
    assert len(again) == len(messages)


def test_a_damaged_mcap_chunk_is_skipped_counted_and_read_past(tmp_path, camvid_pairs):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:12], progress=False)
    intact = {(m.topic, m.log_time_ns) for m in read_all(bag, ["/camera/image_raw/compressed", LABELS])[1]}
    (file,) = bag.glob("*.mcap")
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    file.write_bytes(bytes(data))
    for metadata in (True, False):
        if not metadata:
            (bag / "metadata.yaml").unlink()  # rosbags then scans the file instead of using its summary
        reader, messages = read_all(bag, ["/camera/image_raw/compressed", LABELS])
        damage = reader.damage()
        assert reader.read_error is None and damage["damaged_chunks"] == 1
        assert len(messages) == 24 - damage["messages_in_damaged_chunks"] and len(messages) < 24
        stamps = [m.log_time_ns for m in messages]
        read = {(m.topic, m.log_time_ns) for m in messages}
        assert stamps == sorted(stamps) and stamps[-1] == max(t for _, t in intact)  # read on to the end
        assert len(read) == len(messages) and read < intact  # nothing given twice, nothing made up
        assert any("skipped 1 damaged chunk(s)" in w for w in reader.warnings)


def test_an_mcap_cut_inside_its_first_chunk_gives_its_complete_records(tmp_path, camvid_pairs):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:12], progress=False)
    (file,) = bag.glob("*.mcap")
    file.write_bytes(file.read_bytes()[:300_000])  # one chunk holds ~1 MB: the cut is inside the first
    reader, messages = read_all(bag, ["/camera/image_raw/compressed", LABELS])
    assert 0 < len(messages) < 24 and reader.damage()["truncated_at_byte"] == 8 + 9 + 26  # magic, header record
    assert any("truncated at byte 43" in w for w in reader.warnings)
    file.write_bytes(file.read_bytes()[:200])  # not even the schemas survive: a damaged bag, not a usage error
    with BagReader(bag) as reader:
        with pytest.raises(BagReadError, match=r"not in what could be read.*truncated"):
            reader.require_topic("/camera/image_raw/compressed", (IMAGE,))


def test_a_fifo_or_device_is_refused_at_once(tmp_path, camvid_pairs):
    fifo = tmp_path / "bag.mcap"
    os.mkfifo(fifo)
    with pytest.raises(BagReadError, match="not a regular file or a folder"):
        BagReader(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "bag_0.mcap")
    with pytest.raises(BagReadError, match="bag_0.mcap is not a regular file"):
        BagReader(folder)
    with pytest.raises(BagReadError, match="not a regular file"):
        BagReader("/dev/zero")


def test_unreadable_bags_raise_a_clear_error(tmp_path, camvid_pairs):
    with pytest.raises(BagReadError, match="does not exist"):
        BagReader(tmp_path / "nothing")
    bag = make_bag(tmp_path / "bag", camvid_pairs[:3], image_format="raw", storage="sqlite3", progress=False)
    (file,) = bag.glob("*.db3")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(BagReadError, match="sqlite3"):
        BagReader(bag)
    empty = tmp_path / "empty"
    shutil.copytree(bag, empty)
    (empty / file.name).write_bytes(b"")
    with pytest.raises(BagReadError):
        BagReader(empty)


@pytest.mark.parametrize(("flag", "value"), [("--rate", "0"), ("--rate", "nan"), ("--jpeg-quality", "500")])
def test_make_bag_refuses_a_rate_or_quality_out_of_range(tmp_path, camvid_root, capsys, flag, value):
    assert main([str(tmp_path / "bag"), "--list", str(camvid_root / "val.txt"), "--count", "1", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and value in err and not (tmp_path / "bag").exists()
