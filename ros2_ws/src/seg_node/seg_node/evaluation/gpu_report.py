"""What a GPU check run found: checks, timing rows and speed targets, as ``<slug>.json`` and ``<slug>.md``.

The JSON's shape is fixed (extra keys may follow the required ones)::

    {"device": "NVIDIA H100 80GB HBM3", "torch": "2.5.1+cu124", "cuda": "12.4",
     "checks": [{"name": ..., "ok": true, "detail": ...}],
     "rows": [{"model": "cgnet", "size": "1024x2048", "backend": "torch", "precision": "fp16",
               "mode": "pipelined", "fps": ..., "latency_ms_p50": ...}]}

``validate_report`` says what a report lacks; ``markdown`` renders it as the table that is also printed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPORT_KEYS = ("device", "torch", "cuda", "checks", "rows")
CHECK_KEYS = ("name", "ok", "detail")
ROW_KEYS = ("model", "size", "backend", "precision", "mode", "fps", "latency_ms_p50")
# naive: eager fp32 model, float pre-processing on the host, full logits copied back, argmax on the host
MODES = ("naive", "synchronous", "pipelined", "graphs-synchronous", "graphs-pipelined")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": bool(self.ok), "detail": str(self.detail)}


@dataclass
class Row:
    model: str
    size: str  # HEIGHTxWIDTH of the frames; the network runs at the same size
    backend: str
    precision: str
    mode: str  # one of MODES
    fps: float
    latency_ms_p50: float
    latency_ms_p99: float = 0.0
    frames: int = 0
    cuda_graphs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # field order: the required keys first


@dataclass(frozen=True)
class Target:
    """A speed goal for one row: at least ``fps``, and (``over``) at least ``ratio`` x another mode's row."""

    model: str
    size: str
    precision: str
    mode: str
    fps: float
    over: str | None = None
    ratio: float = 1.0
    device: str = "H100"  # the GPU the goal was set for

    def describe(self) -> str:
        text = f"{self.model} {self.size} {self.precision} {self.mode} >= {self.fps:g} fps"
        return text + (f" and >= {self.ratio:g}x its {self.over} row" if self.over else "")


TARGETS = (
    Target("cgnet", "1024x2048", "fp16", "pipelined", 500.0, over="synchronous", ratio=1.3),
    Target("contextnet", "1024x2048", "fp16", "pipelined", 1000.0),
)


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``: the report's file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown-device"


def find_rows(rows: list[dict[str, Any]], model: str, size: str, precision: str, mode: str,
              backend: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``model`` at ``size``, ``precision`` and ``mode`` (of ``backend``, or of every backend)."""
    return [row for row in rows if (row["model"], row["size"], row["precision"], row["mode"]) == (
        model, size, precision, mode) and backend in (None, row["backend"])]


def find_row(rows: list[dict[str, Any]], model: str, size: str, precision: str, mode: str,
             backend: str | None = None) -> dict[str, Any] | None:
    found = find_rows(rows, model, size, precision, mode, backend)
    return found[0] if found else None


def evaluate_targets(rows: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """Each target with the measured value and met True/False (None: its row was not measured). Where several
    backends measured the row, the fastest counts, against its own backend's ``over`` row."""
    found = []
    for target in TARGETS:
        candidates = find_rows(rows, target.model, target.size, target.precision, target.mode)
        row = max(candidates, key=lambda candidate: candidate["fps"]) if candidates else None
        base = (find_row(rows, target.model, target.size, target.precision, target.over, row["backend"])
                if target.over and row is not None else None)
        entry: dict[str, Any] = {"target": target.describe(), "for_device": target.device,
                                 "on_that_device": target.device.lower() in device.lower(), "fps": None,
                                 "ratio": None, "met": None, "backend": None}
        if row is not None and (target.over is None or base is not None):
            entry["fps"], entry["backend"] = row["fps"], row["backend"]
            met = row["fps"] >= target.fps
            if base is not None:
                entry["ratio"] = round(row["fps"] / base["fps"], 2) if base["fps"] > 0 else None
                met = met and entry["ratio"] is not None and entry["ratio"] >= target.ratio
            entry["met"] = bool(met)
        found.append(entry)
    return found


def build_report(device: str, torch_version: str, cuda_version: str, checks: list[Check], rows: list[Row],
                 **extra: Any) -> dict[str, Any]:
    row_dicts = [row.to_dict() for row in rows]
    report = {"device": device, "torch": torch_version, "cuda": cuda_version,
              "checks": [check.to_dict() for check in checks], "rows": row_dicts}
    report["ok"] = all(check.ok for check in checks)
    report["targets"] = evaluate_targets(row_dicts, device)
    report.update(extra)
    return report


def validate_report(report: dict[str, Any]) -> list[str]:
    """What ``report`` lacks against the fixed shape; empty when it fits."""
    problems = []
    if list(report)[: len(REPORT_KEYS)] != list(REPORT_KEYS):
        problems.append(f"the report's first keys are {list(report)[:5]}, not {list(REPORT_KEYS)}")
    for key in ("device", "torch", "cuda"):
        if not isinstance(report.get(key), str):
            problems.append(f"{key} is {report.get(key)!r}, not a string")
    for kind, keys, types in (("checks", CHECK_KEYS, (str, bool, str)),
                              ("rows", ROW_KEYS, (str, str, str, str, str, (int, float), (int, float)))):
        items = report.get(kind)
        if not isinstance(items, list):
            problems.append(f"{kind} is not a list")
            continue
        for index, item in enumerate(items):
            if list(item)[: len(keys)] != list(keys):
                problems.append(f"{kind}[{index}] keys {list(item)} do not start with {list(keys)}")
            elif not all(isinstance(item[key], kind_of) for key, kind_of in zip(keys, types, strict=True)):
                problems.append(f"{kind}[{index}] has a value of the wrong type: {item}")
    return problems


def markdown(report: dict[str, Any]) -> str:
    """The rows as a table (with speed-ups over the naive and the synchronous row), the targets, the checks."""
    rows = report["rows"]
    failed = [check for check in report["checks"] if not check["ok"]]
    lines = [f"# GPU check: {report['device']}", "",
             f"torch {report['torch']}, CUDA {report['cuda']}; checks: {len(report['checks']) - len(failed)} of "
             f"{len(report['checks'])} passed" + (f", {len(failed)} FAILED" if failed else ""), ""]
    settings = report.get("settings")
    if settings:
        lines += ["Settings: " + ", ".join(f"{key} {value}" for key, value in settings.items()), ""]
    lines += ["| model | size | backend | precision | mode | fps | p50 ms | p99 ms | frames | vs naive "
              "| vs synchronous |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        naive = find_row(rows, row["model"], row["size"], "fp32", "naive")
        sync_mode = "graphs-synchronous" if row["mode"] == "graphs-pipelined" else "synchronous"
        sync = find_row(rows, row["model"], row["size"], row["precision"], sync_mode, row["backend"])
        versus_naive = f"{row['fps'] / naive['fps']:.2f}x" if naive and naive["fps"] > 0 else "-"
        versus_sync = (f"{row['fps'] / sync['fps']:.2f}x" if sync and sync is not row and sync["fps"] > 0
                       and row["mode"].endswith("pipelined") else "-")
        lines.append(f"| {row['model']} | {row['size']} | {row['backend']} | {row['precision']} | {row['mode']} | "
                     f"{row['fps']:.1f} | "
                     f"{row['latency_ms_p50']:.2f} | {row.get('latency_ms_p99', 0.0):.2f} | {row.get('frames', '-')} "
                     f"| {versus_naive} | {versus_sync} |")
    if not rows:
        lines.append("| (no rows measured) | | | | | | | | | | |")
    lines += ["", "Targets (speed is reported, never failed on):", ""]
    for target in report.get("targets", []):
        state = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        value = "" if target["fps"] is None else f": {target['fps']:.1f} fps"
        value += "" if target["ratio"] is None else f", {target['ratio']:.2f}x"
        value += "" if target.get("backend") is None else f" ({target['backend']})"
        where = "" if target["on_that_device"] else f" (set for an {target['for_device']}; this is another GPU)"
        lines.append(f"- {target['target']}{value}: **{state}**{where}")
    for skipped in report.get("skipped", []):
        lines.append(f"- skipped: {skipped}")
    lines += ["", "Checks:", ""]
    lines += [f"- {'ok' if check['ok'] else '**FAILED**'} {check['name']}: {check['detail']}"
              for check in report["checks"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``<slug>.json`` and ``<slug>.md`` into ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = slug(report["device"])
    json_path, md_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
