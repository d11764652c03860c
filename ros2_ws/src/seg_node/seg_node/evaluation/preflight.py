"""Preflight: in seconds, whether each command can import what it needs here (``seg-gpu-check --preflight``).

A lent GPU machine may carry only torch, NumPy and ONNX Runtime; a command that dies at import there costs
the loan's first minutes. ``preflight`` imports each command's modules in this process and names what fails.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass


@dataclass
class PreflightItem:
    command: str
    missing: list[str]  # required modules that failed to import, with why
    optional_missing: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.missing


def import_problem(module: str) -> str | None:
    """None when ``module`` imports, else what failed (the missing module's name where known)."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{module} ({error.name or 'import'}: {error})" if error.name != module else module
    except Exception as error:  # a module that imports but fails while loading: broken, say how
        return f"{module} ({type(error).__name__}: {error})"
    return None


def preflight(commands: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> list[PreflightItem]:
    """Import what each command needs, here and now: ``commands`` maps a command to (modules it needs,
    modules whose absence only turns a part off); what is missing, per command."""
    items = []
    for command, (required, optional) in commands.items():
        start = time.perf_counter()
        missing = [problem for module in required if (problem := import_problem(module))]
        optional_missing = [problem for module in optional if (problem := import_problem(module))]
        items.append(PreflightItem(command, missing, optional_missing, time.perf_counter() - start))
    return items
