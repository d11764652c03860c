"""seg-prebuild on CPU: exports and caches the ONNX graph, says so, and reuses it on the second run."""

from __future__ import annotations

import re

import pytest

from seg_node.cli import prebuild


def test_help_names_the_options_once_each(capsys):
    with pytest.raises(SystemExit) as raised:
        prebuild.main(["--help"])
    assert raised.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: seg-prebuild")
    for flag in ("--network-size", "--backend", "--precision", "--engine-cache-dir", "--int8-calibration-dir"):
        assert flag in text
    assert "PATH:TOPIC" in text and "(default: auto) (default: auto)" not in text
    # each default once, from the shared formatter; None reads "unset"; --network-size keeps its own wording
    assert not re.search(r"\(default: [^)]*\) \(default: ", text) and "(default: None)" not in text
    assert text.count("(default: auto)") == 3 and "all cores (default: unset)" in text
    assert "(default: the weights' training size)" in text


def test_cpu_prebuild_caches_the_onnx_graph_then_reuses_it(weights_path, tmp_path, capsys):
    cache = tmp_path / "engines"
    argv = [str(weights_path("contextnet")), "--network-size", "64", "96", "--network-size", "96", "128",
            "--backend", "onnxruntime", "--device", "cpu", "--threads", "1", "--engine-cache-dir", str(cache)]
    assert prebuild.main(argv) == 0
    first = capsys.readouterr().out
    graphs = sorted(cache.glob("*.onnx"))
    assert len(graphs) == 2 and {g.name.split("-")[0] for g in graphs} == {"contextnet_64x96", "contextnet_96x128"}
    assert first.count("ONNX graph cached at") == 2 and first.count("built and cached") == 2
    assert "on CPU nothing needs building" in first and " s, first frame after " in first
    stamps = [g.stat().st_mtime_ns for g in graphs]
    assert prebuild.main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("loading cached ONNX graph") == 2 and second.count("already cached, reused") == 2
    assert [g.stat().st_mtime_ns for g in sorted(cache.glob("*.onnx"))] == stamps


def test_errors_are_one_line_and_a_status(tmp_path, capsys):
    assert prebuild.main([str(tmp_path / "missing.safetensors"), "--device", "cpu"]) == 1
    assert capsys.readouterr().err.startswith("seg-prebuild: ")
