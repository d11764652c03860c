"""On-disk cache of built engines (ONNX files, TensorRT engines), keyed by everything they depend on.

The key holds the weights' hash, the input shape, the precision, the device
name and the versions of the tools that built the file (torch2trt by its exact
git commit, see ``torch2trt_identity``); it is hashed into the file name, so a
changed key builds a new file instead of loading a stale one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# Bump when the layout of a cached graph changes without any key field changing.
CACHE_FORMAT = 1
# The Docker images pin torch2trt to a commit and export it here (its version, 0.5.0, names many commits).
TORCH2TRT_COMMIT_ENV = "SEG_NODE_TORCH2TRT_COMMIT"
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")

Progress = Callable[[str], None]


def no_progress(_message: str) -> None:
    """The on_progress of callers that gave none."""


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


def _git_commit(folder: Path) -> str | None:
    """HEAD's commit of the git checkout ``folder`` lies in (without running git), or None."""
    for parent in (folder, *folder.parents):
        git = parent / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = git.read_text().strip()
            git = (parent / text.removeprefix("gitdir:").strip()).resolve() if text.startswith("gitdir:") else git
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head if _COMMIT.match(head) else None
            ref = head.removeprefix("ref:").strip()
            if (git / "commondir").is_file():  # a worktree's refs live in the main repository's git folder
                git = (git / (git / "commondir").read_text().strip()).resolve()
            if (git / ref).is_file():
                return (git / ref).read_text().strip()
            packed = git / "packed-refs"
            for line in packed.read_text().splitlines() if packed.is_file() else []:
                commit, _, name = line.partition(" ")
                if name == ref:
                    return commit
        except OSError:
            return None
        return None
    return None


def torch2trt_identity() -> str:
    """What built a TensorRT engine on the torch2trt side, as exactly as it can be told.

    ``$SEG_NODE_TORCH2TRT_COMMIT`` (the Docker images set it); else the commit pip recorded when it
    installed torch2trt from git (direct_url.json); else the commit of a source checkout it is imported
    from; else ``version <x>`` of the installed package; else ``unknown``.
    """
    commit = os.environ.get(TORCH2TRT_COMMIT_ENV, "").strip()
    if commit:
        return f"commit {commit}"
    version = None
    try:
        dist = distribution("torch2trt")
        version = dist.version
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        recorded = direct.get("vcs_info", {}).get("commit_id")
        if recorded:
            return f"commit {recorded}"
    except (PackageNotFoundError, ValueError, OSError):
        pass
    try:
        spec = importlib.util.find_spec("torch2trt")  # finds the package without importing it (or TensorRT)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        commit = _git_commit(Path(spec.origin).resolve().parent)
        if commit:
            return f"commit {commit}"
    return f"version {version}" if version else "unknown"


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

    def get_or_build(self, key: dict[str, Any], stem: str, suffix: str, build: Callable[[Path], None],
                     on_progress: Progress | None = None, what: str = "engine") -> Path:
        """Return the cached file for ``key``, building it with ``build(path)`` first when it is missing.

        The build writes a temporary name that is renamed into place, so a
        crash mid-build never leaves a truncated file under the real name.
        ``on_progress`` hears "loading cached <what> ..." or, after a build,
        "<what> cached at <path>".
        """
        progress = on_progress or no_progress
        path = self.path_for(key, stem, suffix)
        if path.is_file():
            log.info("engine cache hit: %s", path)
            progress(f"loading cached {what} {path}")
            return path
        log.info("engine cache miss: building %s", path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            build(partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        path.with_suffix(".key.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        progress(f"{what} cached at {path}")
        return path
