"""Bad input tells the truth (issue #46): damaged bags, images and labels are refused and counted, never
scored; a command that segmented or scored nothing exits 1; reports hold null, never NaN; nothing hangs.

Every damaged file is made here from a good one, as an adversarial user would damage it."""

from __future__ import annotations

import json
import os
import threading

import cv2
import numpy as np
import pytest

from seg_node.cli.eval import main as seg_eval
from seg_node.cli.replay import main as seg_replay
from seg_node.datasets import CAMVID_CLASSES, CAMVID_IGNORE
from seg_node.imaging import ImageDecodeError, decode_compressed, decode_compressed_strictly
from seg_node.models import build_model
from seg_node.recording.make_bag import make_bag
from seg_node.recording.rosbag import BagWriter, compressed_message, image_message
from seg_node.weights import WeightsInfo, save_weights

COMPRESSED = "/camera/image_raw/compressed"
LABELS = "/camera/labels"
FIRST_STAMP = 1_000_000_000


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained CGNet M1N1 with CamVid's classes: the tests measure what is refused, not skill."""
    model = build_model("cgnet", len(CAMVID_CLASSES), m=1, n=1)
    info = WeightsInfo(
        architecture="cgnet", variant=dict(model.variant), classes=CAMVID_CLASSES, mean=(100.0, 100.0, 100.0),
        std=(60.0, 60.0, 60.0), input_size=(96, 128), dataset="camvid", splits=["train"], ignore_index=CAMVID_IGNORE,
    )  # fmt: skip
    return save_weights(model, info, tmp_path_factory.mktemp("weights") / "tiny.safetensors")


def replay_cli(bag, out, weights, *extra):
    return seg_replay([str(bag), "--image-topic", COMPRESSED, "--weights", str(weights), "--backend", "torch",
                       "--threads", "1", "--no-bag", "--out", str(out), *extra])  # fmt: skip


def strict_json(path):
    """report.json parsed as JSON proper: NaN or Infinity in it fail the test."""

    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def flip_bytes(data: bytes, start: int, count: int, seed: int) -> bytes:
    """``data`` with ``count`` bytes from ``start`` on (inside a JPEG's entropy-coded data) inverted."""
    flipped = bytearray(data)
    rng = np.random.default_rng(seed)
    for index in rng.choice(np.arange(start, len(data)), count, replace=False):
        flipped[index] ^= 0xFF
    return bytes(flipped)


def write_bag(path, frames, storage="mcap"):
    """A bag of (image message, label message or None) per frame on COMPRESSED and LABELS, 10 Hz."""
    with BagWriter(path, storage) as writer:
        for index, (image, label) in enumerate(frames):
            stamp = FIRST_STAMP + index * 100_000_000
            writer.write(COMPRESSED if image.__msgtype__.endswith("CompressedImage") else "/camera/image_raw",
                         image, stamp)  # fmt: skip
            if label is not None:
                writer.write(LABELS, label, stamp)
    return path


def test_damaged_jpegs_that_libjpeg_still_decodes_are_refused(camvid_pairs, capfd):
    good = camvid_pairs[0][0].read_bytes()
    image, _ = decode_compressed_strictly(good)
    assert np.array_equal(image, decode_compressed(good)[0])
    for seed in range(10):
        damaged = flip_bytes(good[:-16], 1000, 30, seed) + good[-16:]
        assert decode_compressed(damaged)[0].shape == image.shape  # OpenCV alone takes it for an image...
        assert "Corrupt JPEG data" in capfd.readouterr().err  # ...and libjpeg only prints a warning
        with pytest.raises(ImageDecodeError, match="damaged: libjpeg says 'Corrupt JPEG data"):
            decode_compressed_strictly(damaged)
        assert "Corrupt JPEG" not in capfd.readouterr().err  # captured as the reason, not printed
    for cut in (len(good) // 2, len(good) - 100):
        with pytest.raises(ImageDecodeError, match="cut off|not a decodable JPEG"):
            decode_compressed_strictly(good[:cut])


def test_a_sqlite3_bag_with_flipped_bytes_scores_only_its_intact_frames(tmp_path, camvid_pairs, weights, capsys):
    pairs = camvid_pairs[:4]
    bag = make_bag(tmp_path / "bag", pairs, storage="sqlite3", progress=False)
    (file,) = bag.glob("*.db3")
    data = file.read_bytes()
    for index in (1, 2):  # flip bytes of these frames' JPEGs where they lie in the database file
        jpeg = pairs[index][0].read_bytes()
        # a stretch of the JPEG's entropy-coded data that lies whole in one database page (sqlite splits blobs
        # over pages; flipping a page's own bytes would break the database, not the JPEG)
        start = next(p for k in range(2000, len(jpeg), 256) if (p := data.find(jpeg[k : k + 1024])) > 0)
        data = data[:start] + flip_bytes(data[start : start + 1024], 0, 40, index) + data[start + 1024 :]
    file.write_bytes(data)
    assert replay_cli(bag, tmp_path / "out", weights, "--label-topic", LABELS) == 1
    err = capsys.readouterr().err
    report = strict_json(tmp_path / "out" / "report.json")
    frames = report["frames"]
    assert frames["unreadable"] == 2 and frames["processed"] == 2 and frames["labelled"] == 2
    assert report["accuracy"]["images"] == 2
    assert sum("Corrupt JPEG data" in e for e in report["errors"]) == 2
    assert "2 of 4 images refused as damaged" in err


def test_jpeg_compressed_labels_are_refused_and_counted(tmp_path, camvid_pairs, weights, capsys):
    frames = []
    for index, (image_path, label_path) in enumerate(camvid_pairs[:3]):
        stamp = FIRST_STAMP + index * 100_000_000
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        extension = ".png" if index == 2 else ".jpg"
        encoded = cv2.imencode(extension, label)[1].tobytes()
        frames.append((compressed_message(image_path.read_bytes(), "jpeg", stamp, "cam"),
                       compressed_message(encoded, extension[1:], stamp, "cam")))  # fmt: skip
    bag = write_bag(tmp_path / "bag", frames)
    assert replay_cli(bag, tmp_path / "out", weights, "--label-topic", LABELS) == 1
    report = strict_json(tmp_path / "out" / "report.json")
    assert report["frames"]["labels_unreadable"] == 2 and report["frames"]["labelled"] == 1
    assert sum("compressed label is a JPEG (lossy)" in e for e in report["errors"]) == 2
    assert "2 of 3 labels refused" in capsys.readouterr().err


def test_labels_without_a_class_give_null_not_nan_and_status_1(tmp_path, camvid_pairs, weights, capsys):
    frames = []
    for index, (image_path, _) in enumerate(camvid_pairs[:2]):
        stamp = FIRST_STAMP + index * 100_000_000
        image = compressed_message(image_path.read_bytes(), "jpeg", stamp, "cam")
        frames.append((image, image_message(np.full((360, 480), 200, np.uint8), "mono8", stamp, "cam")))
    bag = write_bag(tmp_path / "bag", frames)
    assert replay_cli(bag, tmp_path / "out", weights, "--label-topic", LABELS) == 1
    report = strict_json(tmp_path / "out" / "report.json")
    assert report["accuracy"]["miou"] is None and report["accuracy"]["pixel_acc"] is None
    assert report["accuracy"]["pixels"] == 0 and report["frames"]["labelled"] == 2
    assert "hold no class of the weights" in capsys.readouterr().err
    assert "| **mIoU** | **-** |" in (tmp_path / "out" / "report.md").read_text()


def test_nothing_segmented_or_no_label_scorable_is_status_1(tmp_path, camvid_pairs, weights, capsys):
    odd = image_message(np.zeros((36, 48, 3), np.uint8), "rgb8", FIRST_STAMP, "cam")
    odd.encoding = "weird8"  # an encoding no decoder knows
    bag = write_bag(tmp_path / "odd", [(odd, None)] * 1)
    assert seg_replay([str(bag), "--image-topic", "/camera/image_raw", "--weights", str(weights), "--backend",
                       "torch", "--no-bag", "--out", str(tmp_path / "a")]) == 1  # fmt: skip
    assert "no image could be segmented: 1 of 1 unreadable" in capsys.readouterr().err
    image = compressed_message(camvid_pairs[0][0].read_bytes(), "jpeg", FIRST_STAMP, "cam")
    rgb_label = image_message(np.zeros((360, 480, 3), np.uint8), "rgb8", FIRST_STAMP, "cam")
    bag = write_bag(tmp_path / "rgb_labels", [(image, rgb_label)])
    assert replay_cli(bag, tmp_path / "b", weights, "--label-topic", LABELS) == 1
    assert "no label could be scored" in capsys.readouterr().err
    report = strict_json(tmp_path / "b" / "report.json")
    assert report["accuracy"] is None and report["frames"]["processed"] == 1


def test_a_fifo_given_as_a_bag_is_refused_at_once(tmp_path, weights, capsys):
    fifo = tmp_path / "bag.mcap"
    os.mkfifo(fifo)
    status = []
    run = threading.Thread(target=lambda: status.append(replay_cli(fifo, tmp_path / "out", weights)), daemon=True)
    run.start()
    run.join(timeout=120)  # a hang leaves the thread blocked in open(): the test fails instead of hanging
    assert status == [1]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a regular file or a folder" in err


def test_an_mcap_cut_inside_its_first_chunk_is_reported_with_status_1(tmp_path, camvid_pairs, weights, capsys):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:12], progress=False)
    (file,) = bag.glob("*.mcap")
    file.write_bytes(file.read_bytes()[:300_000])
    assert replay_cli(bag, tmp_path / "out", weights, "--label-topic", LABELS) == 1
    err = capsys.readouterr().err
    report = strict_json(tmp_path / "out" / "report.json")
    assert 0 < report["frames"]["processed"] < 12 and report["bag_damage"]["truncated_at_byte"] == 43
    assert "truncated at byte 43" in err and "truncated" in (tmp_path / "out" / "report.md").read_text()


def test_a_damaged_chunk_is_read_past_and_counted_in_the_report(tmp_path, camvid_pairs, weights, capsys):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:12], progress=False)
    (file,) = bag.glob("*.mcap")
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    file.write_bytes(bytes(data))
    assert replay_cli(bag, tmp_path / "out", weights, "--label-topic", LABELS) == 1
    report = strict_json(tmp_path / "out" / "report.json")
    damage = report["bag_damage"]
    assert damage["damaged_chunks"] == 1 and damage["messages_in_damaged_chunks"] > 0
    assert report["read_error"] is None
    assert report["frames"]["read"] + damage["messages_in_damaged_chunks"] // 2 == 12  # images and labels alike
    assert "skipped 1 damaged chunk(s)" in capsys.readouterr().err


def test_seg_eval_exits_1_and_writes_null_when_nothing_is_scored(tmp_path, camvid_pairs, weights, capsys):
    image_path, _ = camvid_pairs[0]
    cv2.imwrite(str(tmp_path / "void.png"), np.full((360, 480), 200, np.uint8))
    (tmp_path / "list.txt").write_text(f"{image_path} {tmp_path / 'void.png'}\n")
    out = tmp_path / "report.json"
    assert seg_eval(["--weights", str(weights), "--data", "/", "--list", str(tmp_path / "list.txt"),
                     "--threads", "1", "--json", str(out)]) == 1  # fmt: skip
    assert "nothing was scored" in capsys.readouterr().err
    assert strict_json(out)["miou"] is None
