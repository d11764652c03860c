"""seg-replay: the engine over a bag equals the engine over the files; reports, outputs and damaged input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from seg_node.cli.replay import main
from seg_node.datasets import CAMVID_CLASSES, CAMVID_IGNORE, camvid
from seg_node.engine import EngineConfig, create_engine
from seg_node.evaluation.evaluate import AugmentedPredictor, EnginePredictor, evaluate, evaluate_model
from seg_node.evaluation.replay import replay
from seg_node.evaluation.sources import output_topics
from seg_node.metrics import ConfusionMatrix, simulate_drops
from seg_node.models import build_model
from seg_node.recording.make_bag import make_bag
from seg_node.recording.rosbag import BagReader, BagWriter, compressed_message, image_message, stamp_ns
from seg_node.weights import WeightsInfo, load_weights, read_info, save_weights

COMPRESSED = "/camera/image_raw/compressed"
RAW = "/camera/image_raw"
LABELS = "/camera/labels"


def tiny_weights(path, input_size):
    """Untrained CGNet with CamVid's classes (the tests measure plumbing, not skill)."""
    model = build_model("cgnet", len(CAMVID_CLASSES))
    info = WeightsInfo(
        architecture="cgnet", variant=dict(model.variant), classes=CAMVID_CLASSES, mean=(100.0, 100.0, 100.0),
        std=(60.0, 60.0, 60.0), input_size=input_size, dataset="camvid", splits=["train"], ignore_index=CAMVID_IGNORE,
    )  # fmt: skip
    return save_weights(model, info, path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors", (96, 128))


@pytest.fixture(scope="module")
def engine(weights):
    engine = create_engine(weights, EngineConfig(backend="torch", threads=1))
    yield engine
    engine.close()


def seg_eval_miou(predict, pairs, tmp_path) -> float:
    """seg-eval's evaluation core over the image and label files of ``pairs``."""
    listing = tmp_path / "pairs.txt"
    listing.write_text("".join(f"{image} {label}\n" for image, label in pairs))
    return evaluate(predict, camvid("/", str(listing))).matrix.miou()


def engine_predictor(engine):
    return lambda rgb: engine.infer(rgb, color_order="rgb").labels


@pytest.mark.parametrize(("image_format", "storage"), [("jpeg", "mcap"), ("raw", "sqlite3")])
def test_replayed_miou_equals_the_files_and_outputs_are_written(tmp_path, camvid_pairs, engine, image_format, storage):
    pairs = camvid_pairs[10:14]
    bag = make_bag(tmp_path / "bag", pairs, image_format=image_format, storage=storage, progress=False)
    topic = COMPRESSED if image_format == "jpeg" else RAW
    report = replay(bag, topic, engine, tmp_path / "out", label_topic=LABELS, progress=False)
    expected = seg_eval_miou(engine_predictor(engine), pairs, tmp_path)
    assert report["accuracy"]["miou"] == pytest.approx(expected, abs=1e-12)
    assert report["frames"] | {"dropped_realtime": 0} == report["frames"] | {
        "in_bag": 4, "read": 4, "processed": 4, "labelled": 4, "without_label": 0, "labels_without_image": 0,
        "dropped_realtime": 0,
    }  # fmt: skip
    assert report["latency_ms"]["p50"] > 0 and report["fps"]["engine"] > 0 and report["fps"]["recorded"] == 10.0
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["accuracy"] == report["accuracy"] and written["backend"] == "torch"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "mIoU" in markdown and "p50" in markdown
    for plot in ("latency.png", "class_iou.png", "overlays.png"):
        assert (tmp_path / "out" / plot).stat().st_size > 1000
    with BagReader(tmp_path / "out" / "segmented") as segmented:
        assert segmented.storage == storage
        expected = {topic: 4, LABELS: 4, **{t: 4 for t in output_topics(topic).values()}}
        assert segmented.counts == expected
        by_topic: dict[str, list[int]] = {}
        for message in segmented.messages(list(expected)):
            by_topic.setdefault(message.topic, []).append(stamp_ns(message.message))
    assert len({tuple(stamps) for stamps in by_topic.values()}) == 1  # every output at its input's stamp


@pytest.mark.slow
def test_replay_at_full_resolution_agrees_with_seg_eval_on_the_model(tmp_path, camvid_pairs):
    """seg-eval runs the node's engine: over the files it equals the replay exactly, and both agree with the
    PyTorch model itself (BatchNorm unfolded, as --multi-scale/--flip run it)."""
    pairs = camvid_pairs[20:22]
    weights = tiny_weights(tmp_path / "full.safetensors", (360, 480))  # CamVid's own size: no resizing
    model, info = load_weights(weights)
    expected = seg_eval_miou(AugmentedPredictor(model, info), pairs, tmp_path)
    config = EngineConfig(backend="torch", threads=1)
    with EnginePredictor(model, info, config) as predictor:
        seg_eval = seg_eval_miou(predictor, pairs, tmp_path)
    engine = create_engine(weights, config)
    try:
        report = replay(make_bag(tmp_path / "bag", pairs, progress=False), COMPRESSED, engine, tmp_path / "out",
                        label_topic=LABELS, write_bag=False, progress=False)  # fmt: skip
    finally:
        engine.close()
    assert report["accuracy"]["miou"] == pytest.approx(seg_eval, abs=1e-12)
    assert report["accuracy"]["miou"] == pytest.approx(expected, abs=1e-4)


def test_evaluate_model_runs_an_in_memory_model_through_the_engine(tmp_path, camvid_pairs):
    """The trainer's validation: a model in training, its normalisation only; its train mode is left alone."""
    pairs = camvid_pairs[20:22]
    model, info = load_weights(tiny_weights(tmp_path / "full.safetensors", (360, 480)))
    listing = tmp_path / "pairs.txt"
    listing.write_text("".join(f"{image} {label}\n" for image, label in pairs))
    spec = camvid("/", str(listing))
    expected = evaluate(AugmentedPredictor(model, info), spec).matrix.miou()
    model.train()
    evaluation = evaluate_model(model, (info.mean, info.std), spec, "cpu")
    assert model.training and evaluation.matrix.images == 2
    assert evaluation.matrix.miou() == pytest.approx(expected, abs=1e-4)


def test_unlabelled_frames_are_counted_not_guessed(tmp_path, camvid_pairs, engine):
    pairs = [(image, label if i % 2 == 0 else None) for i, (image, label) in enumerate(camvid_pairs[:4])]
    bag = make_bag(tmp_path / "bag", pairs, progress=False)
    report = replay(bag, COMPRESSED, engine, tmp_path / "out", label_topic=LABELS, write_bag=False, progress=False)
    assert report["frames"]["labelled"] == 2 and report["frames"]["without_label"] == 2
    assert report["accuracy"]["images"] == 2
    expected = seg_eval_miou(engine_predictor(engine), camvid_pairs[0:3:2], tmp_path)
    assert report["accuracy"]["miou"] == pytest.approx(expected, abs=1e-12)


def test_labels_of_the_wrong_size_are_reported(tmp_path, camvid_pairs, engine):
    small = []
    for index, (_, label_path) in enumerate(camvid_pairs[:2]):
        label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        path = tmp_path / f"label{index}.png"
        cv2.imwrite(str(path), cv2.resize(label, (240, 180), interpolation=cv2.INTER_NEAREST))
        small.append(path)
    bag = make_bag(tmp_path / "bag", [(image, s) for (image, _), s in zip(camvid_pairs[:2], small, strict=True)],
                   progress=False)  # fmt: skip
    report = replay(bag, COMPRESSED, engine, tmp_path / "out", label_topic=LABELS, write_bag=False, progress=False)
    assert report["frames"]["labels_wrong_size"] == 2 and report["accuracy"] is None
    assert any("240x180" in e and "480x360" in e for e in report["errors"])
    assert "No frame could be scored" in (tmp_path / "out" / "report.md").read_text()


def test_realtime_replay_counts_what_the_pipeline_dropped(tmp_path, camvid_pairs, engine):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:6], rate_hz=50, progress=False)
    report = replay(bag, COMPRESSED, engine, tmp_path / "out", label_topic=LABELS, realtime=True, write_bag=False,
                    progress=False)  # fmt: skip
    frames = report["frames"]
    assert report["mode"] == "realtime" and frames["dropped_realtime_source"].startswith("measured")
    assert frames["processed"] + frames["dropped_realtime"] == 6
    assert frames["labelled"] == frames["processed"] and frames["labels_without_image"] == 0


def test_drop_simulation_is_newest_wins_with_one_slot():
    assert simulate_drops([0.0, 0.1, 0.2, 0.3], [0.05] * 4) == 0
    # frame 0 busy until 0.35: frame 1 waits, frame 2 replaces it (1 dropped), frame 3 replaces frame 2
    assert simulate_drops([0.0, 0.1, 0.2, 0.3], [0.35, 0.35, 0.35, 0.35]) == 2


def test_a_foreign_raw_bag_replays(tmp_path, engine, write_foreign_bag):
    frames = [np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8) for i in range(3)]
    bag = write_foreign_bag(tmp_path / "foreign", frames)
    report = replay(bag, "/cam/image", engine, tmp_path / "out", progress=False)
    assert report["frames"]["processed"] == 3 and report["accuracy"] is None
    assert report["storage"] == "sqlite3"


@pytest.mark.slow
def test_command_line_names_missing_topics_and_damaged_bags(tmp_path, camvid_pairs, weights, capsys):
    bag = make_bag(tmp_path / "bag", camvid_pairs[:12], progress=False)
    common = ["--weights", str(weights), "--backend", "torch", "--no-bag"]
    assert main([str(bag), "--image-topic", "/front/image", *common, "--out", str(tmp_path / "a")]) == 2
    error = capsys.readouterr().err
    assert "/front/image" in error and COMPRESSED in error and LABELS in error
    (file,) = bag.glob("*.mcap")
    file.write_bytes(file.read_bytes()[: file.stat().st_size * 2 // 3])
    out = tmp_path / "b"
    assert main([str(bag), "--image-topic", COMPRESSED, "--label-topic", LABELS, *common, "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["frames"]["processed"] < 12 and any("truncated" in w for w in report["warnings"])
    assert "truncated" in (out / "report.md").read_text()


def test_recorded_predictions_of_a_live_node_are_scored(tmp_path, camvid_pairs, weights):
    """`ros2 bag record` of camera, labels and the node's label output: scored without running anything."""
    prediction_topic = output_topics(COMPRESSED)["label"]
    pairs = camvid_pairs[:4]
    matrix = ConfusionMatrix(len(CAMVID_CLASSES), CAMVID_IGNORE)
    with BagWriter(tmp_path / "drive", "mcap") as writer:
        for index, (image_path, label_path) in enumerate(pairs):
            stamp = 1_000_000_000 + index * 100_000_000
            truth = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
            writer.write(COMPRESSED, compressed_message(image_path.read_bytes(), "jpeg", stamp, "cam"), stamp)
            writer.write(LABELS, image_message(truth, "mono8", stamp, "cam"), stamp + 1_000_000)
            if index == 2:
                continue  # the node dropped this frame
            prediction = np.where(truth == 3, 3, (truth + index) % 11).astype(np.uint8)
            matrix.update(truth, prediction)
            writer.write(prediction_topic, image_message(prediction, "mono8", stamp, "cam"), stamp + 200_000_000)
    report = replay(tmp_path / "drive", COMPRESSED, None, tmp_path / "out", label_topic=LABELS,
                    prediction_topic=prediction_topic, info=read_info(weights), progress=False)  # fmt: skip
    assert report["accuracy"]["miou"] == pytest.approx(matrix.miou(), abs=1e-12)
    assert report["frames"]["processed"] == 3 and report["frames"]["dropped_realtime"] == 1
    assert report["latency_ms"]["p50"] == pytest.approx(200.0)
    assert report["backend"] == "the recorded node" and not (tmp_path / "out" / "segmented").exists()
    assert "recorded from the node" in (tmp_path / "out" / "report.md").read_text()


def test_damaged_messages_and_corrupt_images_are_counted_and_skipped(tmp_path, camvid_pairs, engine):
    with BagWriter(tmp_path / "bag", "mcap") as writer:
        for index, (image_path, _) in enumerate(camvid_pairs[:3]):
            stamp = 1_000_000_000 + index * 100_000_000
            data = image_path.read_bytes() if index != 1 else b"\xff\xd8 not really a JPEG"
            writer.write(COMPRESSED, compressed_message(data, "jpeg", stamp, "cam"), stamp)
        writer.write_raw(COMPRESSED, "sensor_msgs/msg/CompressedImage", b"\x00\x01\x00\x00\xff", 1_500_000_000)
    report = replay(tmp_path / "bag", COMPRESSED, engine, tmp_path / "out", write_bag=False, progress=False)
    frames = report["frames"]
    assert frames["damaged_messages"] == 1 and frames["unreadable"] == 1 and frames["processed"] == 2
    assert any("not a decodable JPEG" in e for e in report["errors"])
    assert any("damaged" in w for w in report["warnings"])
