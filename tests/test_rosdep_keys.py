"""rosdep alone installs what the node needs (#43 item 5): every key of package.xml exists for Humble and Jazzy.

``tests/data/rosdep_keys.json`` keeps, for each key, rosdep's Ubuntu entry (rosdistro's rosdep/python.yaml or
base.yaml) or the versions Humble and Jazzy release of a ROS package, from one rosdistro commit
(``tests/data/make_rosdep_keys.py``, the command recorded in the file). A key rosdep cannot resolve on
jammy (Humble) or noble (Jazzy) fails here. With ``ROSDISTRO_GIT_DIR`` set to a clone of ros/rosdistro, a
test checks that the committed file is what the generator writes at the recorded commit.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
KEYS_FILE = DATA / "rosdep_keys.json"
UBUNTU = {"humble": "jammy", "jazzy": "noble"}


def generator():
    spec = importlib.util.spec_from_file_location("make_rosdep_keys", DATA / "make_rosdep_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolves(ubuntu_entry: object, codename: str) -> bool:
    """Whether rosdep's Ubuntu entry installs something on ``codename``: a list of apt packages, a pip
    installer, or a per-release mapping whose entry (or '*') does."""
    if isinstance(ubuntu_entry, list):
        return bool(ubuntu_entry)
    if isinstance(ubuntu_entry, dict):
        if "pip" in ubuntu_entry or "apt" in ubuntu_entry:
            return True
        if codename in ubuntu_entry:
            return resolves(ubuntu_entry[codename], codename)
        return resolves(ubuntu_entry.get("*"), codename)
    return False


def test_every_key_of_package_xml_resolves_for_humble_and_jazzy():
    keys = json.loads(KEYS_FILE.read_text())["keys"]
    declared = generator().package_keys()
    missing = sorted(set(declared) - set(keys))
    assert not missing, f"package.xml keys not in {KEYS_FILE.name}: regenerate it (its generated_by): {missing}"
    unresolved = []
    for key in declared:
        entry = keys[key]
        for distro, codename in UBUNTU.items():
            if "rosdep" in entry:
                ok = resolves(entry["ubuntu"], codename)
            else:
                ok = entry["released"][distro] is not None
            if not ok:
                unresolved.append(f"{key} ({distro})")
    assert not unresolved, f"rosdep has nothing to install for: {unresolved}"


def test_the_resolver_tells_a_missing_release_apart():
    torch = {"*": ["python3-torch"], "bionic": None, "focal": None}  # rosdep's python3-torch
    assert resolves(torch, "jammy") and not resolves(torch, "focal")
    assert resolves({"pip": {"packages": ["onnxruntime"]}}, "noble") and not resolves(None, "jammy")


@pytest.mark.skipif(not os.environ.get("ROSDISTRO_GIT_DIR"), reason="set ROSDISTRO_GIT_DIR to a clone of ros/rosdistro")
def test_the_data_is_what_the_generator_writes(tmp_path):
    committed = json.loads(KEYS_FILE.read_text())
    out = tmp_path / "keys.json"
    generator().main([os.environ["ROSDISTRO_GIT_DIR"], "--ref", committed["commit"], "--out", str(out)])
    fresh = json.loads(out.read_text())
    assert (fresh["commit"], fresh["keys"]) == (committed["commit"], committed["keys"])
