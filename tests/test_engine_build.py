"""Engine creation without a GPU: TensorRT build failures and the auto fallback, TensorRT's captured log, the
cache key's torch2trt commit, ONNX Runtime's TensorRT provider options, progress messages, and the CUDA
backend's events, streams and TensorRT input buffer (checked with fakes, since CUDA is absent here)."""

from __future__ import annotations

import contextlib
import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_node.engine import EngineBuildError, EngineConfig, EngineError, create_engine
from seg_node.engine import cache as engine_cache
from seg_node.engine.backends import tensorrt_build
from seg_node.engine.backends.onnxruntime_backend import OnnxRuntimeBackend, tensorrt_provider_options
from seg_node.engine.backends.torch2trt_backend import Torch2TrtBackend
from seg_node.engine.backends.torch_backend import CudaInput, CudaOutput, TorchBackend, new_event
from seg_node.engine.engine import fallback_resolution
from seg_node.engine.graph import Preprocess
from seg_node.engine.resolve import Resolution
from seg_node.evaluation.gpu_models import untrained_info
from seg_node.weights import load_weights, read_info

COMMIT = "4e820ae31b4e35d59685935223b05b2e11d47b03"


# ---- a failed TensorRT build: EngineBuildError, and backend auto falls back to torch


class FailingTorch2TrtBackend:
    def __init__(self, *_args, **_kwargs) -> None:
        raise EngineBuildError("TensorRT could not build the engine (the builder returned none)",
                               ["[error] pooling window 131072 exceeds the limit"])


@pytest.fixture
def failing_tensorrt(monkeypatch):
    """choose_backend picks torch2trt (on cpu, so that the fallback can run here) and its build fails."""
    monkeypatch.setattr("seg_node.engine.engine.choose_backend", lambda config: Resolution("torch2trt", "cpu", "fp32"))
    monkeypatch.setattr("seg_node.engine.backends.torch2trt_backend.Torch2TrtBackend", FailingTorch2TrtBackend)


def test_backend_auto_falls_back_to_torch_when_the_tensorrt_build_fails(failing_tensorrt, weights_path, caplog):
    messages = []
    with caplog.at_level(logging.WARNING, logger="seg_node.engine"), \
            create_engine(weights_path("contextnet"), EngineConfig(threads=1), on_progress=messages.append) as engine:
        assert (engine.backend_name, engine.device, engine.precision) == ("torch", "cpu", "fp32")
        assert engine.infer(np.zeros((60, 80, 3), np.uint8)).labels.shape == (60, 80)
    assert "falls back to torch" in caplog.text and "pooling window 131072" in caplog.text
    assert any("falling back to torch" in m for m in messages)


def test_an_explicit_torch2trt_backend_raises_the_build_error_with_tensorrts_log(failing_tensorrt, weights_path):
    with pytest.raises(EngineBuildError, match="pooling window 131072") as raised:
        create_engine(weights_path("contextnet"), EngineConfig(backend="torch2trt"))
    assert isinstance(raised.value, EngineError) and raised.value.tensorrt_log


def test_the_fallback_keeps_the_device_and_turns_int8_into_fp16():
    assert fallback_resolution(Resolution("torch2trt", "cuda", "fp16")) == ("torch", "cuda", "fp16")
    assert fallback_resolution(Resolution("torch2trt", "cuda", "int8")) == ("torch", "cuda", "fp16")


# ---- tensorrt_build.convert with a fake tensorrt and a fake torch2trt module


class FakeILogger:
    def __init__(self) -> None:
        pass


class FakeCalibrator:
    def __init__(self, dataset, algorithm=None, cache_file=None) -> None:
        self.dataset, self.cache_file = dataset, cache_file


def fake_tensorrt() -> types.SimpleNamespace:
    return types.SimpleNamespace(ILogger=FakeILogger, Logger=object, __version__="10.3.0")


def fake_conversion(build) -> types.SimpleNamespace:
    """A stand-in for the torch2trt.torch2trt module: its torch2trt() makes its logger through ``module.trt``."""
    module = types.SimpleNamespace(trt="the real tensorrt", DatasetCalibrator=FakeCalibrator)

    def torch2trt(network, inputs, **options):
        logger = module.trt.Logger(tensorrt_build.ERROR)
        return build(module, logger, options)

    module.torch2trt = torch2trt
    return module


def test_a_builder_that_returns_no_engine_raises_with_tensorrts_messages():
    def build(_module, logger, _options):
        logger.log(tensorrt_build.INFO, "an info line, not kept")
        logger.log(tensorrt_build.WARNING, "weights of 'classifier' are all zero")
        logger.log(tensorrt_build.ERROR, "pooling window 131072 exceeds the limit")
        return types.SimpleNamespace(engine=None)

    conversion = fake_conversion(build)
    with pytest.raises(EngineBuildError) as raised:
        tensorrt_build.convert(fake_tensorrt(), conversion, None, [], {})
    assert raised.value.tensorrt_log == ["[warning] weights of 'classifier' are all zero",
                                         "[error] pooling window 131072 exceeds the limit"]
    assert "pooling window 131072" in str(raised.value) and "returned none" in str(raised.value)
    assert conversion.trt == "the real tensorrt"  # the substitution ends with the call


def test_a_converter_that_raises_becomes_a_build_error():
    def build(_module, logger, _options):
        logger.log(tensorrt_build.ERROR, "unsupported layer")
        raise AttributeError("'Tensor' object has no attribute '_trt'")

    with pytest.raises(EngineBuildError, match="AttributeError.*_trt(.|\n)*unsupported layer"):
        tensorrt_build.convert(fake_tensorrt(), fake_conversion(build), None, [], {})


def test_the_calibration_table_is_written_once_then_read(tmp_path):
    seen = []

    def build(module, _logger, options):
        calibrator = module.DatasetCalibrator(options.get("int8_calib_dataset"))
        seen.append(calibrator.cache_file)
        if not Path(calibrator.cache_file).is_file():
            Path(calibrator.cache_file).write_bytes(b"TRT-calibration-table")
        return types.SimpleNamespace(engine="an engine")

    table = tmp_path / "cgnet_int8-abc.calib"
    conversion = fake_conversion(build)
    assert tensorrt_build.convert(fake_tensorrt(), conversion, None, [], {}, table).engine == "an engine"
    assert table.read_bytes() == b"TRT-calibration-table" and seen[0] != str(table)  # written aside, renamed
    assert not list(tmp_path.glob(".*"))
    tensorrt_build.convert(fake_tensorrt(), conversion, None, [], {}, table)
    assert seen[1] == str(table)  # the second build reads the table: no calibration
    assert conversion.DatasetCalibrator is FakeCalibrator


# ---- the cache key names torch2trt's exact commit


def test_torch2trt_identity_prefers_the_pinned_commit(monkeypatch):
    monkeypatch.setenv(engine_cache.TORCH2TRT_COMMIT_ENV, COMMIT)
    assert engine_cache.torch2trt_identity() == f"commit {COMMIT}"
    monkeypatch.delenv(engine_cache.TORCH2TRT_COMMIT_ENV)
    assert engine_cache.torch2trt_identity() in ("unknown",) or engine_cache.torch2trt_identity().startswith(
        ("commit ", "version "))


def test_torch2trt_identity_reads_a_source_checkouts_commit(monkeypatch, tmp_path):
    checkout = tmp_path / "torch2trt"
    (checkout / "torch2trt").mkdir(parents=True)
    (checkout / "torch2trt" / "__init__.py").write_text("")
    git = checkout / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/master\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{COMMIT} refs/heads/master\n")
    monkeypatch.delenv(engine_cache.TORCH2TRT_COMMIT_ENV, raising=False)
    monkeypatch.setattr(engine_cache, "distribution", lambda name: (_ for _ in ()).throw(
        engine_cache.PackageNotFoundError(name)))
    spec = types.SimpleNamespace(origin=str(checkout / "torch2trt" / "__init__.py"))
    monkeypatch.setattr(engine_cache.importlib.util, "find_spec", lambda name: spec)
    assert engine_cache.torch2trt_identity() == f"commit {COMMIT}"
    (git / "refs" / "heads" / "master").write_text("f" * 40 + "\n")  # a loose ref wins over packed-refs
    assert engine_cache.torch2trt_identity() == "commit " + "f" * 40
    (git / "HEAD").write_text(COMMIT + "\n")  # detached
    assert engine_cache.torch2trt_identity() == f"commit {COMMIT}"


def test_the_engine_key_carries_the_commit(monkeypatch, weights_path):
    monkeypatch.setenv(engine_cache.TORCH2TRT_COMMIT_ENV, COMMIT)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Orin")
    backend = object.__new__(Torch2TrtBackend)
    backend._info = read_info(weights_path("cgnet"))
    backend._tensorrt = types.SimpleNamespace(__version__="10.3.0")
    backend.network_size, backend._trt_precision, backend._calibration = (96, 128), "fp16", None
    key = backend.engine_key("a" * 64)
    assert key["torch2trt"] == f"commit {COMMIT}" and key["tensorrt"] == "10.3.0" and key["gpu"] == "Orin"
    cache = engine_cache.EngineCache(None)
    other = dict(key, torch2trt="commit " + "0" * 40)
    assert cache.path_for(key, "cgnet", ".engine") != cache.path_for(other, "cgnet", ".engine")


# ---- ONNX Runtime's TensorRT execution provider: engine cache, timing cache, profiles


def test_tensorrt_provider_options_cache_and_profile(tmp_path):
    options = tensorrt_provider_options(tmp_path / "trt", "fp16", (512, 1024))
    assert options["trt_engine_cache_enable"] is True and options["trt_timing_cache_enable"] is True
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path / "trt")
    assert options["trt_fp16_enable"] is True
    assert options["trt_profile_min_shapes"] == "frame:1x2x2x3"
    assert options["trt_profile_opt_shapes"] == "frame:1x512x1024x3"
    assert options["trt_profile_max_shapes"] == "frame:1x4096x4096x3"
    assert tensorrt_provider_options(tmp_path, "fp32", (96, 128))["trt_fp16_enable"] is False


def test_the_onnxruntime_backend_gives_the_tensorrt_provider_its_options(monkeypatch, weights_path, cache_dir):
    import onnxruntime

    made = {}

    class RecordingSession:
        def __init__(self, path, options, providers, provider_options) -> None:
            made.update(path=path, providers=providers, provider_options=provider_options)

        def get_providers(self):
            return made["providers"]

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    model, info = load_weights(weights_path("contextnet"))
    messages = []
    backend = OnnxRuntimeBackend(model, info, (96, 128), "cuda", "fp16", False, True, 1, str(cache_dir),
                                 on_progress=messages.append)
    assert made["providers"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt_options = made["provider_options"][0]
    assert trt_options == tensorrt_provider_options(backend.tensorrt_cache, "fp16", (96, 128))
    assert backend.tensorrt_cache.is_dir() and backend.tensorrt_cache.parent == Path(cache_dir)
    assert backend.onnx_path.stem in backend.tensorrt_cache.name and backend.tensorrt_cache.name.endswith("_fp16")
    assert any("ONNX Runtime's TensorRT engine" in m for m in messages)


# ---- progress messages


def test_progress_reports_the_export_then_the_cache(weights_path, tmp_path):
    config = EngineConfig(backend="onnxruntime", device="cpu", engine_cache_dir=str(tmp_path), threads=1)
    first, second = [], []
    with create_engine(weights_path("contextnet"), config, on_progress=first.append):
        pass
    with create_engine(weights_path("contextnet"), config, second.append):  # positional works too
        pass
    assert first[0] == "exporting the ONNX graph" and first[1].startswith(f"ONNX graph cached at {tmp_path}")
    assert len(second) == 1 and second[0].startswith(f"loading cached ONNX graph {tmp_path}")


# ---- the CUDA backend's events, streams and TensorRT input buffer, with fakes


class FakeEvent:
    made: list[dict] = []

    def __init__(self, **kwargs) -> None:
        FakeEvent.made.append(kwargs)
        self.recorded_on = None

    def record(self, stream) -> None:
        self.recorded_on = stream

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, _other) -> float:
        return 2.0


class FakeStream:
    def __init__(self, name: str) -> None:
        self.name, self.waited = name, []

    def wait_event(self, event) -> None:
        self.waited.append(event)


def test_every_cuda_event_is_blocking(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    FakeEvent.made = []
    new_event()
    new_event(timing=True)
    assert FakeEvent.made == [{"enable_timing": False, "blocking": True}, {"enable_timing": True, "blocking": True}]
    FakeEvent.made = []
    backend = object.__new__(TorchBackend)
    backend.device = "cuda"
    backend.new_input_slot()
    backend.new_output_slot()
    assert len(FakeEvent.made) == 6 and all(kwargs["blocking"] is True for kwargs in FakeEvent.made)
    assert sum(kwargs["enable_timing"] for kwargs in FakeEvent.made) == 2  # started, finished: network time


def test_uploads_and_downloads_run_on_separate_streams(monkeypatch):
    active = []

    @contextlib.contextmanager
    def stream(s):
        active.append(s)
        yield

    monkeypatch.setattr(torch.cuda, "stream", stream)
    backend = object.__new__(TorchBackend)
    backend.device = "cuda"
    backend._orders = {(0, 1, 2): None, (2, 1, 0): "bgr"}
    backend.upload_stream, backend.download_stream = FakeStream("upload"), FakeStream("download")
    frame = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    source = CudaInput(uploaded=FakeEvent(), consumed=FakeEvent(), host=torch.empty(4, 5, 3, dtype=torch.uint8),
                       frame=torch.empty(4, 5, 3, dtype=torch.uint8))
    backend.prepare(source, frame, "rgb")
    assert active == [backend.upload_stream] and source.uploaded.recorded_on is backend.upload_stream
    assert np.array_equal(source.frame.numpy(), frame)
    maps = torch.arange(2 * 4 * 5, dtype=torch.uint8).reshape(1, 2, 4, 5)
    target = CudaOutput(computed=FakeEvent(), downloaded=FakeEvent(), started=FakeEvent(), finished=FakeEvent(),
                        maps=maps, host=torch.empty(1, 2, 4, 5, dtype=torch.uint8))
    result = backend.collect(target)
    assert active[1] is backend.download_stream and target.downloaded.recorded_on is backend.download_stream
    assert backend.download_stream.waited == [target.computed]  # the download waits for the network, not uploads
    assert backend.upload_stream.waited == []
    assert np.array_equal(result.labels, maps[0, 0].numpy()) and result.network_seconds == 0.002


def test_tensorrt_input_is_written_into_one_contiguous_buffer(weights_path, make_frames):
    info = read_info(weights_path("cgnet"))
    backend = object.__new__(Torch2TrtBackend)
    backend.preprocess = Preprocess(info, (48, 64))
    backend._input = torch.empty(1, 3, 48, 64)
    backend.network = lambda image: image
    address = backend._input.data_ptr()
    for frame in make_frames(2, 60, 80):
        pixels = torch.from_numpy(frame)[None]
        with torch.inference_mode():
            image = backend.preprocess_frame(pixels, None)
        assert image.data_ptr() == address and image.is_contiguous()  # plain NCHW, what TensorRT reads
        assert torch.equal(image, backend.preprocess(pixels))  # the same numbers as channels-last
        assert backend.run_network(image) is image  # no .contiguous() copy on the way in


# ---- torch2trt's options on TensorRT 10: int8 with fp16 and the entropy calibrator 2, named explicitly


class FakeBuilderConfig:
    """Records what torch2trt sets on TensorRT's builder config."""

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.int8_calibrator = None

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)


def tensorrt_10() -> types.SimpleNamespace:
    trt = fake_tensorrt()
    trt.CalibrationAlgoType = types.SimpleNamespace(ENTROPY_CALIBRATION="legacy entropy",
                                                    ENTROPY_CALIBRATION_2="entropy 2")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    return trt


class RecordingCalibrator(FakeCalibrator):
    def __init__(self, dataset, algorithm=None, cache_file=None) -> None:
        super().__init__(dataset, algorithm, cache_file)
        self.algorithm = algorithm


def upstream_like_build(trt, configs):
    """torch2trt.torch2trt's builder-config lines at 4e820ae, with its default calibrator on TensorRT 10 (the legacy
    one: ``'10.3' >= '5.1'`` is false)."""

    def build(module, _logger, options):
        config = FakeBuilderConfig()
        if options.get("fp16_mode", False):
            config.set_flag(trt.BuilderFlag.FP16)
        if options.get("int8_mode", False):
            config.set_flag(trt.BuilderFlag.INT8)
            algorithm = options.get("int8_calib_algorithm", trt.CalibrationAlgoType.ENTROPY_CALIBRATION)
            config.int8_calibrator = module.DatasetCalibrator(options["int8_calib_dataset"], algorithm=algorithm)
        configs.append(config)
        return types.SimpleNamespace(engine="an engine")

    return build


@pytest.mark.parametrize(("precision", "flags"), [("fp32", set()), ("fp16", {"FP16"}), ("int8", {"FP16", "INT8"})])
def test_builds_get_fp16_with_int8_and_the_entropy_calibrator_2(tmp_path, precision, flags):
    trt, configs = tensorrt_10(), []
    conversion = fake_conversion(upstream_like_build(trt, configs))
    conversion.DatasetCalibrator = RecordingCalibrator
    options = tensorrt_build.build_options(trt, precision, ["frame 0"] if precision == "int8" else None)
    table = tmp_path / "table.calib" if precision == "int8" else None
    tensorrt_build.convert(trt, conversion, None, [], options, table)
    (config,) = configs
    assert config.flags == flags
    assert options["input_names"] == ["image"] and options["output_names"] == ["logits"]
    if precision == "int8":
        assert config.int8_calibrator.algorithm == "entropy 2"
        assert config.int8_calibrator.dataset == ["frame 0"] and config.int8_calibrator.cache_file
    else:
        assert config.int8_calibrator is None and "int8_mode" not in options


# ---- the engine runs through its execution context: a failed run raises, never passes on stale memory


class FakeContext:
    def __init__(self, executes: bool = True) -> None:
        self.executes = executes
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.streams: list[int] = []

    def set_input_shape(self, name, shape):
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream):
        self.streams.append(stream)
        return self.executes


class FakeEngine:
    def __init__(self, context: FakeContext | None) -> None:
        self.context = context

    def create_execution_context(self):
        return self.context

    def get_tensor_shape(self, name):
        assert name == "logits"
        return (1, 11, 6, 8)

    def get_tensor_dtype(self, name):
        return "float"


def fake_runtime_tensorrt() -> types.SimpleNamespace:
    trt = fake_tensorrt()
    trt.DataType = types.SimpleNamespace(FLOAT="float", HALF="half", INT32="int32", INT8="int8", BOOL="bool")
    return trt


def torch2trt_backend_running(context: FakeContext) -> Torch2TrtBackend:
    backend = object.__new__(Torch2TrtBackend)
    backend.network = tensorrt_build.EngineRunner(fake_runtime_tensorrt(), FakeEngine(context), device="cpu",
                                                  stream_handle=lambda: 7)
    return backend


def test_the_engine_runs_through_its_execution_context_on_the_current_stream():
    context = FakeContext()
    backend = torch2trt_backend_running(context)
    image = torch.zeros(1, 3, 6, 8)
    output = backend.run_network(image)
    assert output is backend.network.output and output.shape == (1, 11, 6, 8) and output.dtype == torch.float32
    assert context.addresses == {"image": image.data_ptr(), "logits": output.data_ptr()}
    assert context.shapes == {"image": (1, 3, 6, 8)} and context.streams == [7]
    assert backend.run_network(image) is output  # one persistent output tensor


def test_a_failed_tensorrt_run_raises_engine_error():
    backend = torch2trt_backend_running(FakeContext(executes=False))
    with pytest.raises(EngineError, match="execute_async_v3 returned False"):
        backend.run_network(torch.zeros(1, 3, 6, 8))


def test_an_engine_without_an_execution_context_is_a_build_error():
    with pytest.raises(EngineBuildError, match="execution context"):
        tensorrt_build.EngineRunner(fake_runtime_tensorrt(), FakeEngine(None), device="cpu")


def test_a_new_engine_that_disagrees_with_torch_is_not_used():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 11, 1).eval()
    backend = object.__new__(Torch2TrtBackend)
    backend.network_size, backend._trt_precision, backend.engine_path = (12, 16), "fp16", Path("cgnet.engine")
    backend._input = torch.empty(1, 3, 12, 16)
    backend.preprocess = Preprocess(untrained_info("cgnet", {}), (12, 16))
    seen = []

    def same_as_torch(image):
        seen.append(image.clone())
        return network(image) + 1e-4

    assert backend.compare_with_torch(same_as_torch, network) == 1.0
    assert torch.equal(seen[0], backend._input)  # the engine and torch read the same pre-processed frame
    assert -3 < float(seen[0].min()) < float(seen[0].max()) < 3  # an image's normalised values, not raw pixels
    with pytest.raises(EngineBuildError, match=r"only .*% of a test input's pixels.*cgnet\.engine"):
        backend.compare_with_torch(lambda image: -network(image), network)


# ---- torch.onnx.export without ``dynamo=`` (torch 2.4, as on some JetPack 6 l4t-pytorch images)


def test_exports_pass_dynamo_only_where_torch_onnx_export_takes_it(monkeypatch, tmp_path):
    from seg_node.engine.backends import onnxruntime_backend
    from seg_node.models import export

    calls = []

    def export_of_torch_2_4(model, args, f, export_params=True, verbose=False, training=None, input_names=None,
                            output_names=None, operator_export_type=None, opset_version=None,
                            do_constant_folding=True, dynamic_axes=None, keep_initializers_as_inputs=None,
                            custom_opsets=None, export_modules_as_functions=False, autograd_inlining=True):
        calls.append((f, opset_version))

    assert export.legacy_exporter_options() == {"dynamo": False}  # this torch has the argument
    monkeypatch.setattr(torch.onnx, "export", export_of_torch_2_4)
    assert export.legacy_exporter_options() == {}
    network = torch.nn.Conv2d(3, 4, 1)
    export.export_onnx(network, tmp_path / "a.onnx", 8, 8)
    onnxruntime_backend.export_end_to_end(network, tmp_path / "b.onnx", (8, 8))
    assert calls == [(str(tmp_path / "a.onnx"), 17), (str(tmp_path / "b.onnx"), 17)]
