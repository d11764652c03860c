"""Write what rosdep knows of package.xml's keys as JSON: the data of ``tests/test_rosdep_keys.py``.

    python tests/data/make_rosdep_keys.py ROSDISTRO_GIT_DIR [--ref master] [--out tests/data/rosdep_keys.json]

ROSDISTRO_GIT_DIR is a clone (bare or not) of https://github.com/ros/rosdistro. For every key that
ros2_ws/src/seg_node/package.xml depends on, the JSON keeps either its entry in rosdep's own database
(``rosdep/python.yaml`` or ``rosdep/base.yaml``: the Ubuntu part, which Humble (jammy) and Jazzy (noble)
resolve), or, for a ROS package, the version each of those distributions releases (``<distro>/distribution.yaml``).
The commit and the command that made it are recorded; the test needs neither network nor rosdep.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_XML = REPO_ROOT / "ros2_ws" / "src" / "seg_node" / "package.xml"
DEFAULT_OUT = Path(__file__).resolve().parent / "rosdep_keys.json"
ROSDEP_FILES = ("rosdep/python.yaml", "rosdep/base.yaml")
DISTROS = ("humble", "jazzy")
DEPEND_TAGS = ("depend", "build_depend", "exec_depend", "test_depend", "buildtool_depend")


def package_keys(path: Path = PACKAGE_XML) -> list[str]:
    manifest = ElementTree.parse(path).getroot()
    return sorted({element.text.strip() for tag in DEPEND_TAGS for element in manifest.iter(tag)})


def git_yaml(git_dir: str, commit: str, path: str) -> dict:
    text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout
    return yaml.safe_load(text)


def released_packages(distribution: dict) -> dict[str, str]:
    """package -> version of every package a distribution.yaml releases."""
    found = {}
    for name, repository in distribution["repositories"].items():
        release = repository.get("release")
        if release and release.get("version"):
            for package in release.get("packages", [name]):
                found[package] = release["version"]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("git_dir", help="a clone (bare or not) of https://github.com/ros/rosdistro")
    parser.add_argument("--ref", default="master")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    git_dir = str(Path(args.git_dir) / ".git") if (Path(args.git_dir) / ".git").exists() else args.git_dir
    commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", "--verify", f"{args.ref}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    rosdep = {path: git_yaml(git_dir, commit, path) for path in ROSDEP_FILES}
    released = {distro: released_packages(git_yaml(git_dir, commit, f"{distro}/distribution.yaml"))
                for distro in DISTROS}
    keys = {}
    for key in package_keys():
        source = next((path for path in ROSDEP_FILES if key in rosdep[path]), None)
        if source is not None:
            keys[key] = {"rosdep": source, "ubuntu": rosdep[source][key].get("ubuntu")}
        else:
            keys[key] = {"released": {distro: released[distro].get(key) for distro in DISTROS}}
    command = ["python", "tests/data/make_rosdep_keys.py", *(sys.argv[1:] if argv is None else argv)]
    document = {
        "description": "rosdep's entries (Ubuntu) and the Humble and Jazzy releases of package.xml's keys; "
        "see tests/data/make_rosdep_keys.py",
        "source": "https://github.com/ros/rosdistro",
        "ref": args.ref,
        "commit": commit,
        "generated_by": shlex.join(command),
        "keys": keys,
    }
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{args.out}: {len(keys)} keys at rosdistro {commit}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
