"""On-disk cache of built engines (ONNX files, TensorRT engines), keyed by everything they depend on.

The key holds the weights' hash, the input shape, the precision, the device
name and the versions of the tools that built the file; it is hashed into the
file name, so a changed key builds a new file instead of loading a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# Bump when the layout of a cached graph changes without any key field changing.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "seg_node" / "engines"


def state_hash(model: nn.Module) -> str:
    """SHA-256 of the model's tensors, names and shapes: the same weights give the same hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def writable_cache_dir(requested: str | Path | None) -> Path:
    """The requested (or default) cache folder, or a temporary one with a warning when it cannot be written."""
    folder = Path(requested).expanduser() if requested else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
        return folder
    except OSError as error:
        # A fresh private folder: a shared, predictable one in /tmp could be planted by another user.
        fallback = Path(tempfile.mkdtemp(prefix="seg_node-engines-"))
        log.warning("engine cache %s is not writable (%s); using %s for this run, so engines are rebuilt on the "
                    "next start: set engine_cache_dir to a writable folder", folder, error, fallback)
        return fallback


class EngineCache:
    """Files in one cache folder, each named by the hash of its key."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = writable_cache_dir(folder)

    def path_for(self, key: dict[str, Any], stem: str, suffix: str) -> Path:
        text = json.dumps({"cache_format": CACHE_FORMAT, **key}, sort_keys=True)
        return self.folder / f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:20]}{suffix}"

    def get_or_build(self, key: dict[str, Any], stem: str, suffix: str, build: Callable[[Path], None]) -> Path:
        """Return the cached file for ``key``, building it with ``build(path)`` first when it is missing.

        The build writes a temporary name that is renamed into place, so a
        crash mid-build never leaves a truncated file under the real name.
        """
        path = self.path_for(key, stem, suffix)
        if path.is_file():
            log.info("engine cache hit: %s", path)
            return path
        log.info("engine cache miss: building %s", path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            build(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        path.with_suffix(".key.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        return path
