"""The inference engine without ROS: backends, pre/post-processing on the device, cache, errors."""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_node.cli import engine_flags
from seg_node.cli.engine_flags import add_engine_arguments, engine_config_from_args
from seg_node.engine import (
    ENGINE_OPTIONS,
    BackendUnavailableError,
    EngineConfig,
    EngineConfigError,
    EngineError,
    FrameError,
    UnsupportedCombinationError,
    choose_backend,
    create_engine,
)
from seg_node.engine import options as engine_options
from seg_node.engine.graph import Postprocess, Preprocess, normalize, resize_maps, resize_maps_on_host
from seg_node.weights import load_weights, read_info

NETWORK_SIZE = (96, 128)  # the training size of conftest's make_weights
ARCHITECTURES = ["cgnet", "contextnet"]
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def torch_engine(weights_path):
    with create_engine(weights_path("contextnet"), EngineConfig(backend="torch", device="cpu")) as engine:
        yield engine


def reference_labels(weights: Path, frame: np.ndarray) -> np.ndarray:
    """What the engine computes, written the plain way: eager fp32 model, float maths, argmax, nearest resize."""
    model, info = load_weights(weights)
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=info.input_size, mode="bilinear", align_corners=False)
    image = (image - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        labels = model(image).argmax(1, keepdim=True).byte()
    return F.interpolate(labels, size=frame.shape[:2], mode="nearest")[0, 0].numpy()


CPU_BACKENDS = ["torch", "onnxruntime"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cpu_backend_matches_plain_reference(weights_path, cache_dir, backend, architecture, make_frames):
    weights = weights_path(architecture)
    frame = make_frames(1)[0]
    config = EngineConfig(backend=backend, device="cpu", engine_cache_dir=str(cache_dir), confidence=True)
    with create_engine(weights, config) as engine:
        assert (engine.backend_name, engine.device, engine.precision) == (backend, "cpu", "fp32")
        assert engine.network_size == NETWORK_SIZE
        result = engine.infer(frame, tag="frame-0")
    assert result.error is None and result.tag == "frame-0" and result.stream == "default"
    assert result.labels.dtype == np.uint8 and result.labels.shape == frame.shape[:2]
    assert result.confidence.dtype == np.uint8 and result.confidence.shape == frame.shape[:2]
    # max softmax of 11 classes is at least 1/11
    assert result.confidence.min() >= int(255 / 11) and result.labels.max() < 11
    assert {"network", "total"} <= set(result.timings)
    reference = reference_labels(weights, frame)
    # BatchNorm folding and fused kernels move logits by ~1e-5: only near-ties may flip
    assert np.mean(result.labels == reference) > 0.995
    assert len(np.unique(reference)) > 1  # the comparison means something


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_network_resolution_output_and_frame_sizes(weights_path, cache_dir, backend, make_frames):
    config = EngineConfig(backend=backend, device="cpu", engine_cache_dir=str(cache_dir),
                          output_resolution="network", network_size=(64, 96))
    with create_engine(weights_path("contextnet"), config) as engine:
        for height, width in ((120, 160), (64, 96), (50, 300)):
            result = engine.infer(make_frames(1, height, width)[0])
            assert result.labels.shape == (64, 96) and result.confidence is None


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bgr_and_strided_views_give_the_same_labels(weights_path, cache_dir, backend, make_frames):
    config = EngineConfig(backend=backend, device="cpu", engine_cache_dir=str(cache_dir))
    frame = make_frames(1)[0]
    with create_engine(weights_path("contextnet"), config) as engine:
        expected = engine.infer(frame).labels
        assert np.array_equal(engine.infer(np.ascontiguousarray(frame[:, :, ::-1]), color_order="bgr").labels,
                              expected)
        assert np.array_equal(engine.infer(frame[:, :, ::-1], color_order="bgr").labels, expected)  # negative stride
        padded = np.zeros((130, 200, 3), np.uint8)
        padded[5:125, 10:170] = frame
        assert np.array_equal(engine.infer(padded[5:125, 10:170]).labels, expected)  # row-strided view


def count_max_softmax(monkeypatch) -> list[int]:
    """Count the calls of Postprocess.max_softmax (the confidence's softmax) from now on, in any thread."""
    calls = []
    original = Postprocess.max_softmax

    def counted(self, logits):
        calls.append(1)
        return original(self, logits)

    monkeypatch.setattr(Postprocess, "max_softmax", counted)
    return calls


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_confidence_per_frame_is_skipped_when_not_wanted(weights_path, cache_dir, backend, make_frames, monkeypatch):
    frames = make_frames(2, seed=4)
    config = EngineConfig(backend=backend, device="cpu", engine_cache_dir=str(cache_dir), confidence=True)
    with create_engine(weights_path("cgnet"), config) as engine:
        calls = count_max_softmax(monkeypatch)  # after the build: the ONNX export traced it
        for frame in frames:
            full = engine.infer(frame)  # None: as configured
            asked = engine.infer(frame, confidence=True)
            with_confidence = len(calls)
            labels_only = engine.infer(frame, confidence=False)
            assert len(calls) == with_confidence  # no softmax for this frame (or, ONNX Runtime, not in torch)
            assert labels_only.confidence is None and labels_only.error is None
            assert np.array_equal(labels_only.labels, full.labels)  # bit-identical
            assert np.array_equal(asked.labels, full.labels) and np.array_equal(asked.confidence, full.confidence)
            assert full.confidence.shape == full.labels.shape
    # torch: the softmax ran for exactly the frames that wanted it; ONNX Runtime runs its exported graph
    # (which computes it for every frame, see onnxruntime_backend), never Postprocess
    assert len(calls) == (2 * len(frames) if backend == "torch" else 0)


def test_confidence_for_a_frame_needs_an_engine_built_with_it(torch_engine, make_frames):
    frame = make_frames(1)[0]
    assert not torch_engine.config.confidence
    with pytest.raises(EngineConfigError, match="built without confidence.*confidence=True"):
        torch_engine.infer(frame, confidence=True)
    with torch_engine.pipeline() as pipeline:
        with pytest.raises(EngineConfigError, match="built without confidence"):
            pipeline.submit(frame, confidence=True)
        assert pipeline.stats().submitted == 0  # refused before it was queued
    result = torch_engine.infer(frame, confidence=False)
    assert result.confidence is None and np.array_equal(result.labels, torch_engine.infer(frame).labels)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((120, 160, 3), np.float32), "uint8"),
        (np.zeros((120, 160), np.uint8), "H x W x 3"),
        (np.zeros((120, 160, 4), np.uint8), "H x W x 3"),
        (np.zeros((0, 160, 3), np.uint8), "at least"),
        ("not an image", "numpy array"),
    ],
)
def test_bad_frames_raise_frame_error(torch_engine, frame, message, make_frames):
    with pytest.raises(FrameError, match=message):
        torch_engine.infer(frame)
    with pytest.raises(FrameError, match="color_order"):
        torch_engine.infer(make_frames(1)[0], color_order="yuv")
    assert torch_engine.infer(make_frames(1)[0]).labels is not None  # and the engine goes on


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (EngineConfig(backend="tensorflow"), "backend"),
        (EngineConfig(precision="fp8"), "precision"),
        (EngineConfig(output_resolution="half"), "output_resolution"),
        (EngineConfig(network_size=(8, 8)), "network_size"),
        (EngineConfig(threads=0), "threads"),
        (EngineConfig(backend="torch", device="cpu", precision="int8"), "int8"),
        (EngineConfig(backend="onnxruntime", device="cpu", precision="fp16"), "fp16"),
    ],
)
def test_config_errors_name_the_problem(weights_path, cache_dir, config, message):
    config.engine_cache_dir = str(cache_dir)
    with pytest.raises(EngineError, match=message):
        create_engine(weights_path("contextnet"), config)


def test_auto_choice_here_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="seg_node.engine"):
        backend, device, precision = choose_backend(EngineConfig())
    if CUDA:
        assert device == "cuda" and backend in ("torch2trt", "torch") and precision == "fp16"
    else:
        assert (backend, device, precision) == ("onnxruntime", "cpu", "fp32")
    assert f"engine backend {backend}" in caplog.text


@pytest.mark.slow
def test_onnx_graph_is_cached_by_key(weights_path, tmp_path, caplog, make_weights):
    cache = tmp_path / "cache"
    config = EngineConfig(backend="onnxruntime", device="cpu", engine_cache_dir=str(cache))
    weights = weights_path("contextnet")
    with create_engine(weights, config) as engine:
        first = engine.backend.onnx_path
    built_at = first.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="seg_node.engine"), create_engine(weights, config) as engine:
        assert engine.backend.onnx_path == first and first.stat().st_mtime_ns == built_at
    assert "cache hit" in caplog.text
    # other weights, other size or other outputs: a new file, never the stale one
    other = make_weights(tmp_path, "contextnet", seed=1)
    for changed_weights, changed in ((other, config), (weights, EngineConfig(**{**vars(config), "confidence": True}))):
        with create_engine(changed_weights, changed) as engine:
            assert engine.backend.onnx_path != first
    assert len(list(cache.glob("*.onnx"))) == 3 and len(list(cache.glob("*.key.json"))) == 3


@pytest.mark.slow
def test_unwritable_cache_falls_back_to_a_temporary_folder(weights_path, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    config = EngineConfig(backend="onnxruntime", device="cpu", engine_cache_dir=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="seg_node.engine"), \
            create_engine(weights_path("contextnet"), config) as engine:
        assert engine.backend.onnx_path.is_file() and blocker not in engine.backend.onnx_path.parents
    assert "not writable" in caplog.text


def test_cpu_threads_are_applied(weights_path):
    before = torch.get_num_threads()
    try:
        with create_engine(weights_path("contextnet"), EngineConfig(backend="torch", device="cpu",
                                                                                  threads=1)):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def torch2trt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
        import torch2trt  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed here"
    return None if CUDA else "no CUDA GPU here"


@pytest.mark.skipif(torch2trt_missing() is None, reason="torch2trt and CUDA are present")
def test_missing_torch2trt_names_what_to_install(weights_path):
    with pytest.raises(BackendUnavailableError, match="torch2trt"):
        create_engine(weights_path("contextnet"), EngineConfig(backend="torch2trt"))


@pytest.mark.skipif(CUDA, reason="CUDA is present")
def test_missing_cuda_is_a_clear_error(weights_path):
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        create_engine(weights_path("contextnet"), EngineConfig(backend="torch", device="cuda"))


@pytest.mark.slow
@pytest.mark.skipif(torch2trt_missing() is not None, reason=str(torch2trt_missing()))
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_torch2trt_engine_builds_caches_and_matches_torch(weights_path, tmp_path, precision, make_frames):
    weights = weights_path("cgnet")
    frames = make_frames(4)
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    import cv2

    for index, frame in enumerate(frames):
        cv2.imwrite(str(calibration / f"{index}.png"), frame[:, :, ::-1])
    config = EngineConfig(backend="torch2trt", precision=precision, engine_cache_dir=str(tmp_path / "cache"),
                          int8_calibration_dir=str(calibration))
    with create_engine(weights, config) as engine:
        labels = [engine.infer(frame).labels for frame in frames]
    assert len(list((tmp_path / "cache").glob("*.engine"))) == 1
    with create_engine(weights, config) as engine:  # from the cache
        assert all(np.array_equal(engine.infer(f).labels, expected) for f, expected in zip(frames, labels, strict=True))
    with create_engine(weights, EngineConfig(backend="torch", device="cuda", precision="fp32")) as engine:
        reference = [engine.infer(frame).labels for frame in frames]
    agreement = np.mean([np.mean(a == b) for a, b in zip(labels, reference, strict=True)])
    assert agreement > (0.98 if precision == "fp16" else 0.8)


@pytest.mark.slow
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU here (torch.cuda.is_available() is False)")
@pytest.mark.parametrize(("precision", "cuda_graphs"), [("fp32", False), ("fp16", False), ("fp16", True)])
def test_cuda_backend_matches_cpu(weights_path, precision, cuda_graphs, make_frames):
    weights = weights_path("cgnet")
    frames = make_frames(3)
    config = EngineConfig(backend="torch", device="cuda", precision=precision, cuda_graphs=cuda_graphs,
                          confidence=True)
    with create_engine(weights, config) as engine:
        cuda_labels = [engine.infer(frame).labels for frame in frames]
    with create_engine(weights, EngineConfig(backend="torch", device="cpu")) as engine:
        cpu_labels = [engine.infer(frame).labels for frame in frames]
    agreement = np.mean([np.mean(a == b) for a, b in zip(cuda_labels, cpu_labels, strict=True)])
    assert agreement > (0.995 if precision == "fp32" else 0.98)


# ---- the options vocabulary, resolution errors, normalisation


def test_options_and_engine_config_fields_agree():
    assert [f.name for f in fields(EngineConfig)] == [option.name for option in ENGINE_OPTIONS]
    defaults = EngineConfig()
    for option in ENGINE_OPTIONS:
        assert getattr(defaults, option.name) == option.default, option.name
        if option.choices:
            assert option.default in option.choices, option.name
    by_name = {option.name: option for option in ENGINE_OPTIONS}
    assert by_name["backend"].choices == engine_options.BACKENDS
    assert by_name["precision"].choices == engine_options.PRECISIONS
    assert by_name["device"].choices == engine_options.DEVICES
    assert by_name["output_resolution"].choices == engine_options.OUTPUT_RESOLUTIONS
    defaults.validate()


@pytest.mark.parametrize(("text", "problem"), [
    ("360x480,1024x2048", None), ("360X480,", None), ("360x", "is not HEIGHTxWIDTH"), ("360x480x3", "HEIGHTxWIDTH"),
    ("8x480", "each side must be 16 to 4096"), ("", "no size given"),
])
def test_the_speed_tools_sizes_are_parsed_and_checked(text, problem):
    if problem is None:
        assert engine_flags.parse_sizes(text) == [(360, 480), (1024, 2048)][: text.count("x") + text.count("X")]
        return
    with pytest.raises(argparse.ArgumentTypeError, match=problem):
        engine_flags.parse_sizes(text)


def test_add_engine_arguments_shows_every_option_with_its_default_once():
    from seg_node.cli import HelpFormatter  # the console scripts' formatter shows the defaults

    parser = argparse.ArgumentParser(prog="tool", formatter_class=HelpFormatter)
    add_engine_arguments(parser)
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    for option in ENGINE_OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        assert flag in text, flag
        shown = "unset" if option.default is None else option.default
        assert f"{option.help} (default: {shown})" in text, option.name
        assert f"{option.help} (default: {shown}) (default:" not in text, option.name
        for choice in option.choices:
            assert choice in text
    assert "(default: None)" not in text
    assert engine_config_from_args(parser.parse_args([])) == EngineConfig()
    args = parser.parse_args(["--backend", "torch", "--network-size", "64", "96", "--cuda-graphs", "--threads", "2",
                              "--int8-calibration-dir", "/frames"])
    assert engine_config_from_args(args) == EngineConfig(backend="torch", network_size=(64, 96), cuda_graphs=True,
                                                         threads=2, int8_calibration_dir="/frames")
    only = argparse.ArgumentParser()
    add_engine_arguments(only, ["backend", "threads"], defaults={"backend": "torch"})
    assert vars(only.parse_args([])) == {"backend": "torch", "threads": None}
    with pytest.raises(EngineConfigError, match="threads"):
        engine_config_from_args(only.parse_args(["--threads", "0"]))


RESOLVE_ERRORS = [
    (EngineConfig(backend="tensorflow"), EngineConfigError, "backend"),
    (EngineConfig(network_size=(8, 8)), EngineConfigError, "network_size"),
    (EngineConfig(backend="torch", device="cpu", precision="int8"), UnsupportedCombinationError, "int8"),
    (EngineConfig(backend="onnxruntime", device="cpu", precision="int8"), UnsupportedCombinationError, "int8"),
    (EngineConfig(backend="onnxruntime", device="cpu", precision="fp16"), UnsupportedCombinationError, "fp16"),
    (EngineConfig(backend="torch", device="cpu", precision="fp16"), UnsupportedCombinationError, "fp16"),
    (EngineConfig(backend="torch2trt", device="cpu"), UnsupportedCombinationError, "torch2trt"),
    (EngineConfig(backend="torch", device="cpu", cuda_graphs=True), UnsupportedCombinationError, "cuda_graphs"),
    (EngineConfig(backend="onnxruntime", precision="fp16"), UnsupportedCombinationError, "fp16"),
]
if not CUDA:
    RESOLVE_ERRORS += [
        (EngineConfig(device="cuda"), BackendUnavailableError, "CUDA"),
        (EngineConfig(backend="torch2trt"), BackendUnavailableError, "torch2trt"),
        (EngineConfig(precision="fp16"), UnsupportedCombinationError, "backend auto chose"),
    ]


@pytest.mark.parametrize(("config", "error", "message"), RESOLVE_ERRORS)
def test_resolve_errors_are_specific_types(config, error, message):
    with pytest.raises(error, match=message) as raised:
        choose_backend(config)
    assert isinstance(raised.value, EngineError)  # callers catching EngineError still catch it
    assert len(str(raised.value)) > 30  # a sentence that says what to change, not a bare name


def test_resolution_is_a_tuple_of_concrete_names():
    choice = choose_backend(EngineConfig(backend="torch", device="cpu"))
    assert choice == ("torch", "cpu", "fp32") and (choice.backend, choice.device, choice.precision) == choice


def test_normalize_is_the_engine_preprocessing(weights_path, make_frames):
    info = read_info(weights_path("contextnet"))
    frame = make_frames(1, *NETWORK_SIZE)[0]
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    expected = (image - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    normalized = normalize(image, info)
    assert torch.allclose(normalized, expected, atol=1e-5)
    engine_input = Preprocess(info, NETWORK_SIZE)(torch.from_numpy(frame)[None])  # same size: no resize
    assert torch.equal(engine_input, normalized)


@pytest.mark.parametrize("name", ["cgnet", "contextnet"])
def test_both_networks_fold_their_batchnorms_and_compute_the_same(name, caplog):
    from seg_node.engine.backends.torch_backend import fold_batchnorm
    from seg_node.models import build_model

    torch.manual_seed(0)
    model = build_model(name, 11).eval()
    for layer in model.modules():  # statistics other than the initial ones, so that folding has work to do
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    with caplog.at_level(logging.WARNING):
        folded = fold_batchnorm(model)
    assert "folding skipped" not in caplog.text

    def batchnorms(module: torch.nn.Module) -> int:
        return sum(isinstance(layer, torch.nn.BatchNorm2d) for layer in module.modules())

    # CGNet keeps the BatchNorms that follow a concatenation (no single convolution to fold them into)
    assert batchnorms(folded) < batchnorms(model)
    image = torch.randn(1, 3, 72, 96)
    with torch.no_grad():
        expected = model(image)
        torch.testing.assert_close(folded(image), expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("source, target", [((96, 128), (1080, 1920)), ((360, 480), (720, 1280)), ((64, 96), (50, 300)),
                                            ((97, 131), (1024, 2048)), ((120, 160), (60, 80)), ((7, 5), (7, 5))])
def test_host_resize_of_maps_is_torchs_nearest_resize(source, target):
    maps = torch.randint(0, 256, (1, 2, *source), dtype=torch.uint8)
    expected = resize_maps(maps, target)[0].numpy()
    resized = resize_maps_on_host(maps[0].numpy(), target)
    assert resized.shape == (2, *target) and np.array_equal(resized, expected)
    assert resize_maps_on_host(maps[0].numpy(), None).shape == (2, *source)


@pytest.mark.parametrize("frame_size", [(120, 160), (96, 128)])
def test_channel_order_gives_the_same_input_before_or_after_the_resize(weights_path, frame_size):
    """Preprocess swaps BGR after the resize (less to move); the numbers are those of swapping first."""
    preprocess = Preprocess(read_info(weights_path("contextnet")), NETWORK_SIZE)
    frame = torch.randint(0, 256, (1, *frame_size, 3), dtype=torch.uint8)
    swapped = preprocess(frame, torch.tensor([2, 1, 0]))
    assert torch.equal(swapped, preprocess(frame.flip(3)))
