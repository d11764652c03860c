"""seg-gpu-check: prove and measure the engine's CUDA path on an NVIDIA GPU, in at most 10 minutes.

    seg-gpu-check --preflight          # in seconds: can each device command import what it needs here?
    seg-gpu-check [--quick] [--out DIR]

On a lent GPU machine, where only what is written under $OUT comes back, the report goes to $OUT by
default (elsewhere to docs/gpu, where reports are kept): <gpu-name>.json and .md, rewritten after every
check and every timing row, so a run cut off by a time limit still brings back what it found.
Exit status: 0 all checks passed, 1 a check failed (or, with --preflight, a command cannot import what it
needs), 2 no CUDA device. See seg_node.evaluation.gpu_check for what is checked and timed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import UsageError
from ..evaluation import gpu_check
from ..evaluation.gpu_models import MODELS
from ..evaluation.gpu_report import markdown, size_text, validate_report
from ..evaluation.gpu_run import FULL, QUICK
from ..evaluation.preflight import preflight
from . import EXIT_FAILURE, HelpFormatter, entry_point
from .engine_flags import parse_sizes

PROG = "seg-gpu-check"
EXIT_NO_CUDA = 2

# What each command run on a lent GPU imports (``--preflight``): the modules that must import, and those whose
# absence only turns a part off.
PREFLIGHT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "seg-gpu-check": (("numpy", "torch", "seg_node.evaluation.gpu_check"), ("safetensors",)),
    "seg-gpu-check torch2trt section": ((), ("tensorrt", "torch2trt")),
    "seg-bench": (("seg_node.evaluation.bench",), ("cv2", "onnxruntime")),
    "tools/campaign.py, the supervisor": (("numpy", "torch", "seg_node.cli", "seg_node.errors"), ()),
    "seg-train, each campaign run": (("cv2", "yaml", "tqdm", "matplotlib", "seg_node.training.trainer"), ()),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--preflight", action="store_true",
                        help="only import what each device command needs and say what is missing (seconds)")
    parser.add_argument("--out", type=Path, help="folder for <gpu-name>.json and .md (default: $OUT where set, "
                        "else docs/gpu)")
    parser.add_argument("--quick", action="store_true", help="fewer frames and shorter timing rows (about 2 min)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: cgnet,contextnet")
    parser.add_argument("--sizes", type=parse_sizes, default=",".join(size_text(s) for s in gpu_check.SIZES),
                        help="comma-separated HEIGHTxWIDTH frame sizes (the network runs at the frame size)")
    parser.add_argument("--no-timing", dest="timing", action="store_false",
                        help="checks only, no timing rows (default: off)")
    parser.add_argument("--no-torch2trt", dest="torch2trt", action="store_false",
                        help="skip the torch2trt section even where torch2trt imports (default: off)")
    parser.add_argument("--budget", type=float, default=gpu_check.BUDGET_S,
                        help="seconds for the whole run; what is still to come when it is spent (models, sizes, "
                        "rows) is skipped and listed")
    parser.add_argument("--tf32", action="store_true", help="let fp32 convolutions use TF32 (default: true fp32)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="set torch.backends.cudnn.benchmark")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: run the device-independent checks on the CPU, as the tests do")
    return parser


def run_preflight() -> int:
    items = preflight(PREFLIGHT)
    for item in items:
        state = "ok     " if item.ok else "MISSING"
        text = f"{state} {item.command} ({item.seconds:.1f} s)"
        text += f": cannot import {', '.join(item.missing)}" if item.missing else ""
        text += f"; without {', '.join(item.optional_missing)} (optional)" if item.optional_missing else ""
        print(text, flush=True)
    print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    return 0 if all(item.ok for item in items) else EXIT_FAILURE


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.preflight:
        return run_preflight()
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UsageError(f"unknown model {unknown}; choose from {list(MODELS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{PROG}: no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
              f"CUDA build {torch.version.cuda or 'none'}); run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return EXIT_NO_CUDA
    out = args.out or gpu_check.default_out()
    settings = gpu_check.GpuCheckSettings(
        device=args.device, models=models, sizes=args.sizes, plan=QUICK if args.quick else FULL,
        timing=args.timing, budget_s=args.budget, tf32=args.tf32, cudnn_benchmark=args.cudnn_benchmark, out=out,
        torch2trt=args.torch2trt)
    print(f"writing the report to {out} after every check and row", flush=True)
    report = gpu_check.run_checks(settings, say=lambda text: print(text, flush=True))
    print()
    print(markdown(report), end="")
    print(f"wrote {out} in {report['seconds']:.0f} s")
    problems = validate_report(report)
    if problems:
        print(f"{PROG}: the report does not fit its shape: {problems}", file=sys.stderr)
        return EXIT_FAILURE
    return 0 if report["ok"] else EXIT_FAILURE


main = entry_point(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
