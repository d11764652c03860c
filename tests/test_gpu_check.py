"""The GPU check program's device-independent parts, run on the CPU: the checks themselves (and that they can
fail), the report's JSON shape and markdown table, the exit status without CUDA, and that it imports and runs
with only PyTorch and NumPy (no OpenCV, PyYAML, tqdm, ONNX Runtime, TensorRT or even safetensors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PACKAGE_ROOT

from seg_node.engine import EngineConfig, create_engine_from_model
from seg_node.evaluation import gpu_check, gpu_models, gpu_pipeline
from seg_node.evaluation.gpu_report import (
    CHECK_KEYS,
    REPORT_KEYS,
    ROW_KEYS,
    Check,
    Row,
    build_report,
    evaluate_targets,
    markdown,
    slug,
    validate_report,
    write_report,
)
from seg_node.evaluation.preflight import preflight
from seg_node.evaluation.timing import TimingSettings

SIZE = (48, 64)
TINY = gpu_check.Plan(labels=2, pipeline=8, memory=30, memory_warmup=5, sync=10,
                      rows=TimingSettings(seconds=0.1, warmup=1, minimum=2, maximum=40))
BLOCKED = ("cv2", "yaml", "tqdm", "onnxruntime", "tensorrt", "torch2trt", "safetensors")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A CPU run whose report goes to a folder; at every line it says, what the report on disk held."""
    out = tmp_path_factory.mktemp("gpu")
    lines, on_disk = [], []

    def say(line: str) -> None:
        lines.append(line)
        path = out / "cpu.json"
        held = json.loads(path.read_text()) if path.is_file() else None
        on_disk.append(None if held is None else (len(held["checks"]), len(held["rows"]), len(held["skipped"])))

    settings = gpu_check.GpuCheckSettings(device="cpu", sizes=[SIZE], plan=TINY, threads=1, out=out)
    found = gpu_check.run_checks(settings, say=say)
    assert lines and all(line.startswith("[") for line in lines)
    return found, lines, on_disk, out


@pytest.fixture(scope="module")
def report(written):
    return written[0]


@pytest.fixture(scope="module")
def engine():
    model, info, _ = gpu_models.load_model("contextnet")
    config = EngineConfig(backend="torch", device="cpu", network_size=SIZE, threads=1)
    with create_engine_from_model(model, info, config) as engine:
        yield engine


def test_every_check_passes_on_cpu(report):
    failed = [check for check in report["checks"] if not check["ok"]]
    assert not failed and report["ok"]
    names = " | ".join(check["name"] for check in report["checks"])
    for model in gpu_models.MODELS:
        for what in ("engine builds", "labels vs eager fp32", "frame-size changes", "order and bit-identity",
                     "bad frames fail alone", "close() under load", "no memory growth",
                     "BGR + confidence engine builds", "BGR frames 96x128, confidence, maps at network size"):
            assert f"{model} 48x64 fp32 {what}" in names or f"{model} 48x64 fp32 pipeline {what}" in names, what
    assert "graphs" not in names and "steady state" not in names  # CUDA-only checks are not run on CPU
    assert "torch2trt" not in names
    assert any(line.startswith("the torch2trt section: ") and "CUDA only" in line for line in report["skipped"])


def test_report_has_the_fixed_shape(report):
    assert validate_report(report) == []
    assert list(report)[:5] == list(REPORT_KEYS) and report["device"] == "cpu" and report["cuda"] == "none"
    assert all(list(check)[:3] == list(CHECK_KEYS) for check in report["checks"])
    modes = {(row["model"], row["mode"]) for row in report["rows"]}
    assert modes == {(m, mode) for m in gpu_models.MODELS for mode in ("naive", "synchronous", "pipelined")}
    for row in report["rows"]:
        assert list(row)[:7] == list(ROW_KEYS)
        assert row["size"] == "48x64" and row["backend"] == "torch" and row["fps"] > 0 and row["latency_ms_p50"] > 0
    assert json.loads(json.dumps(report)) == report
    assert set(report["weights"]) == set(gpu_models.MODELS)


def test_report_files_and_markdown(report, tmp_path):
    json_path, md_path = write_report(report, tmp_path / "gpu")
    assert json_path.name == "cpu.json" and json.loads(json_path.read_text()) == report
    table = md_path.read_text()
    assert table == markdown(report)
    assert "| model | size | backend | precision | mode | fps | p50 ms |" in table
    assert table.count("| 48x64 | torch | fp32 |") == len(report["rows"])
    assert "not measured" in table and "Checks:" in table


def test_targets_met_and_not_met():
    def row(model, mode, fps):
        return Row(model, "1024x2048", "torch", "fp16", mode, fps, 1.0).to_dict()

    rows = [row("cgnet", "synchronous", 400.0), row("cgnet", "pipelined", 600.0), row("contextnet", "pipelined", 900)]
    cgnet, contextnet = evaluate_targets(rows, "NVIDIA H100 80GB HBM3")
    assert cgnet["met"] is True and cgnet["ratio"] == 1.5 and cgnet["on_that_device"]
    assert contextnet["met"] is False and contextnet["fps"] == 900
    rows[0]["fps"] = 500.0  # 600 fps but only 1.2x the synchronous row
    assert evaluate_targets(rows, "NVIDIA A100")[0]["met"] is False
    torch2trt = [Row("cgnet", "1024x2048", "torch2trt", "fp16", mode, fps, 1.0).to_dict()
                 for mode, fps in (("synchronous", 450.0), ("pipelined", 700.0))]
    best = evaluate_targets(rows + torch2trt, "NVIDIA H100 80GB HBM3")[0]  # the fastest backend, over its own row
    assert (best["fps"], best["ratio"], best["backend"], best["met"]) == (700.0, 1.56, "torch2trt", True)
    report = build_report("NVIDIA H100 80GB HBM3", "2.5", "12.4", [Check("a", True, "fine")],
                          [Row("cgnet", "1024x2048", "torch", "fp16", "pipelined", 600.0, 1.0)])
    assert validate_report(report) == [] and "**met**" not in markdown(report) and "not measured" in markdown(report)


def test_validate_report_names_what_is_wrong():
    report = build_report("gpu", "2.5", "12.4", [Check("a", True, "x")], [])
    assert validate_report(report) == []
    assert validate_report({**report, "cuda": None})
    assert validate_report({"torch": "2.5", **report})
    bad_row = {"model": "cgnet", "size": "1x1", "backend": "torch", "precision": "fp16", "mode": "x", "fps": "fast",
               "latency_ms_p50": 1.0}
    assert validate_report({**report, "rows": [bad_row]})
    assert validate_report({**report, "checks": [{"ok": True, "name": "a", "detail": ""}]})


def test_slug():
    assert slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slug("NVIDIA GeForce RTX 4090 (laptop)") == "nvidia-geforce-rtx-4090-laptop"
    assert slug("???") == "unknown-device"


def test_the_checks_can_fail(engine):
    frames = gpu_models.make_frames(3, *SIZE, seed=1)
    expected = [engine.infer(frame).labels for frame in frames]
    wrong = [np.full_like(labels, 200) for labels in expected]
    ok, detail = gpu_check.check_labels(engine, frames, wrong)
    assert not ok and "0.000% equal" in detail
    ok, detail = gpu_pipeline.check_order_and_identity(engine, frames, wrong, 6)
    assert not ok and "differ from engine.infer" in detail
    ok, detail = gpu_pipeline.check_error_isolation(engine, frames, wrong, 6)
    assert not ok and "good frame" in detail
    run = gpu_check.Run(10.0, None)
    assert not run.check("crashes", lambda: 1 / 0)
    assert run.checks[0].ok is False and "ZeroDivisionError" in run.checks[0].detail
    assert "test_gpu_check.py" in run.checks[0].detail


def test_feeder_keeps_order_without_drops(engine):
    frames = gpu_models.make_frames(2, *SIZE, seed=2)
    with gpu_pipeline.Feeder(engine, depth=2) as feeder:
        count, seconds = feeder.run(gpu_pipeline.cycle(frames, 7, ("a", "b", "c")))
        assert feeder.pipeline.stats().dropped == 0
    assert count == 7 and seconds > 0 and [o.tag[1] for o in feeder.outcomes] == list(range(7))


def test_random_weights_still_give_regions():
    model, info = gpu_models.random_model("contextnet")
    frame = gpu_models.make_frames(1, 96, 128, seed=3)[0]
    labels = gpu_models.reference_labels(model, info, frame, (96, 128), "cpu")
    counts = np.bincount(labels.ravel(), minlength=11)
    assert labels.shape == (96, 128) and counts.max() < labels.size  # not one class everywhere


def test_without_cuda_exit_status_2_and_one_line(monkeypatch, capsys):
    from seg_node.cli import gpu_check as cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status = cli.main([])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("seg-gpu-check: no CUDA device")


def test_help_and_bad_arguments(capsys):
    from seg_node.cli import gpu_check as cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0 and "--quick" in capsys.readouterr().out
    assert cli.main(["--models", "unet"]) == 2 and "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["--sizes", "big"])
    assert stop.value.code == 2


def test_runs_with_only_torch_and_numpy(tmp_path):
    """A fresh interpreter where importing OpenCV, PyYAML, tqdm, ONNX Runtime, TensorRT or safetensors fails."""
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        BLOCKED = {BLOCKED!r}

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is blocked in this test")
                return None

        sys.meta_path.insert(0, Blocker())
        from seg_node.cli import gpu_check
        status = gpu_check.main(["--device", "cpu", "--models", "contextnet", "--sizes", "32x48", "--quick",
                                 "--no-timing", "--out", {str(tmp_path)!r}])
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
        report = json.load(open({str(tmp_path / "cpu.json")!r}))
        print("RESULT", json.dumps({{"status": status, "loaded": loaded, "weights": report["weights"]}}))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result["status"] == 0 and result["loaded"] == []
    assert "built-in reader" in result["weights"]["contextnet"]


def test_the_report_is_on_disk_after_every_check_and_row(written):
    report, lines, on_disk, out = written
    checks = rows = skipped = 0
    for line, held in zip(lines, on_disk, strict=True):
        text = line.split("] ", 1)[1]
        checks += text.startswith(("ok ", "FAILED "))
        rows += text.startswith("row ")
        skipped += text.startswith("skipped ")
        if text.startswith(("ok ", "FAILED ", "row ", "skipped ")):
            assert held == (checks, rows, skipped), line  # written before it was said
    assert rows == len(report["rows"]) > 0 and checks == len(report["checks"])
    final = json.loads((out / "cpu.json").read_text())
    assert final["complete"] is True and final["checks"] == report["checks"]
    assert (out / "cpu.md").read_text() == markdown(final)


def test_the_deadline_is_checked_before_each_model_and_size(monkeypatch, tmp_path):
    sections = []

    def fake_section(run, name, model, info, eager, size, settings):
        sections.append((name, size))

    monkeypatch.setattr(gpu_check, "check_model_size", fake_section)
    monkeypatch.setattr(gpu_check.Run, "time_left", lambda self: not sections)  # spent during the first section
    settings = gpu_check.GpuCheckSettings(device="cpu", sizes=[SIZE, (32, 48)], plan=TINY, out=tmp_path)
    report = gpu_check.run_checks(settings, say=None)
    assert sections == [("cgnet", SIZE)]
    assert [check["name"] for check in report["checks"]] == ["cgnet weights load"]
    assert "cgnet 32x48 torch: the time budget was spent before it started" in report["skipped"]
    assert "contextnet: the time budget was spent before it started" in report["skipped"]
    assert json.loads((tmp_path / "cpu.json").read_text())["skipped"] == report["skipped"]


def test_a_spent_budget_still_writes_a_report(tmp_path):
    settings = gpu_check.GpuCheckSettings(device="cpu", sizes=[SIZE], plan=TINY, budget_s=0.0, out=tmp_path)
    report = gpu_check.run_checks(settings, say=None)
    assert report["checks"] == [] and report["ok"] and report["complete"]
    assert validate_report(json.loads((tmp_path / "cpu.json").read_text())) == []


def test_the_default_out_is_the_folder_that_comes_back(monkeypatch):
    monkeypatch.setenv("OUT", "/tmp/device-out")
    assert gpu_check.default_out() == Path("/tmp/device-out")
    monkeypatch.delenv("OUT")
    assert gpu_check.default_out() == Path("docs/gpu")


def test_the_bgr_confidence_check_can_fail(engine):
    model, info, _ = gpu_models.load_model("contextnet")
    config = EngineConfig(backend="torch", device="cpu", network_size=SIZE, threads=1, confidence=True,
                          output_resolution="network")
    frames = gpu_models.make_frames(2, 96, 128, seed=4)
    with create_engine_from_model(model, info, config) as confident:
        reference = [confident.infer(np.ascontiguousarray(f[..., ::-1]), color_order="bgr").labels for f in frames]
        assert reference[0].shape == SIZE
        ok, detail = gpu_pipeline.check_bgr_confidence(confident, frames, reference, 0.99, 4)
        assert ok and "equal to infer, maps 48x64" in detail
        ok, detail = gpu_pipeline.check_bgr_confidence(confident, frames, [200 - r for r in reference], 0.99, 4)
        assert not ok and "agree with the eager model's on 0.000%" in detail
    assert gpu_pipeline.check_steady_state(engine, frames, 4) == (True, "not applicable on CPU")


def test_preflight_names_what_is_missing():
    items = preflight({"fine": (("json",), ("seg_node_no_such_optional",)),
                                 "broken": (("json", "seg_node_no_such_module"), ())})
    fine, broken = items
    assert fine.ok and fine.optional_missing == ["seg_node_no_such_optional"]
    assert not broken.ok and broken.missing == ["seg_node_no_such_module"]


def test_preflight_command(capsys):
    from seg_node.cli import gpu_check as cli

    status = cli.main(["--preflight"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0].split(maxsplit=1)[1] for line in out[:-1]] == list(cli.PREFLIGHT)
    assert status == (0 if all(line.startswith("ok ") for line in out[:-1]) else 1)
    assert out[-1].startswith("torch ") and "CUDA available: False" in out[-1]


def test_the_torch2trt_section_runs_where_torch2trt_imports(monkeypatch, tmp_path):
    """On CUDA with torch2trt importable, every model and size gets the torch2trt section after the torch one, and
    the check of backend auto and its fallback (two builds) at the first size only."""
    calls = []

    def fake_load(name, device, loaded):
        loaded += ["model", "info", "eager"]
        return True, "fake weights"

    monkeypatch.setattr(gpu_check, "torch2trt_missing", lambda: None)
    monkeypatch.setattr(gpu_check, "load", fake_load)
    monkeypatch.setattr(gpu_check, "device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(gpu_check, "check_model_size", lambda run, name, *args: calls.append(("torch", name)))
    monkeypatch.setattr(gpu_check, "torch2trt_section", lambda run, name, model, info, eager, size, plan, timed,
                        first: calls.append(("torch2trt", name, size, timed, first)))
    settings = gpu_check.GpuCheckSettings(device="cuda", sizes=[SIZE, (32, 48)], plan=TINY, out=tmp_path)
    report = gpu_check.run_checks(settings, say=None)
    assert calls == [("torch", "cgnet"), ("torch2trt", "cgnet", SIZE, True, True),
                     ("torch", "cgnet"), ("torch2trt", "cgnet", (32, 48), True, False),
                     ("torch", "contextnet"), ("torch2trt", "contextnet", SIZE, True, True),
                     ("torch", "contextnet"), ("torch2trt", "contextnet", (32, 48), True, False)]
    assert report["device"] == "Fake GPU" and not report["skipped"]

    calls.clear()
    settings = gpu_check.GpuCheckSettings(device="cuda", sizes=[SIZE], plan=TINY, out=tmp_path, torch2trt=False)
    gpu_check.run_checks(settings, say=None)
    assert calls == [("torch", "cgnet"), ("torch", "contextnet")], "--no-torch2trt leaves the section out"


def test_failing_tensorrt_builds_fail_every_build_in_the_block_only():
    from seg_node.engine import EngineBuildError
    from seg_node.engine.backends import tensorrt_build
    from seg_node.evaluation.gpu_torch2trt import failing_tensorrt_builds

    convert = tensorrt_build.convert
    with failing_tensorrt_builds():
        with pytest.raises(EngineBuildError, match="made to fail by seg-gpu-check") as raised:
            tensorrt_build.convert("trt", "torch2trt.torch2trt", None, [], {})
        assert raised.value.tensorrt_log == ["[error] made to fail by seg-gpu-check"]
    assert tensorrt_build.convert is convert
