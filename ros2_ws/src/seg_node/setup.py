"""ament_python build of seg_node: ``colcon build`` on ROS 2, ``pip install -e`` in a virtual environment.

The name and version are read from package.xml so that the two cannot drift.
"""

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
MANIFEST = ElementTree.parse(HERE / "package.xml").getroot()
PACKAGE_NAME = MANIFEST.findtext("name")
SHARE = f"share/{PACKAGE_NAME}"


# launch/ and weights/ are links to the repository's top-level folders, which the design fixes.
LINKED_FOLDERS = {"launch": "*.launch.py", "weights": "*.safetensors"}


class ShareFolderError(RuntimeError):
    """A linked share folder is missing: installing without it would give a package that cannot start."""


def share_files(folder: str, pattern: str) -> list[str]:
    files = sorted(str(path.relative_to(HERE)) for path in (HERE / folder).glob(pattern) if path.is_file())
    if folder in LINKED_FOLDERS and not list((HERE / folder).glob(LINKED_FOLDERS[folder])):
        link = HERE / folder
        target = f" -> {link.readlink()}" if link.is_symlink() else ""
        raise ShareFolderError(
            f"{link}{target} does not lead to the repository's {folder}/ folder with {LINKED_FOLDERS[folder]} files, "
            f"so the package would install without them. It must be a symbolic link to ../../../{folder} "
            "(a copy of this folder without its repository, or a checkout with core.symlinks=false, breaks it)."
        )
    return files


setup(
    name=PACKAGE_NAME,
    version=MANIFEST.findtext("version"),
    description=MANIFEST.findtext("description"),
    license=MANIFEST.findtext("license"),
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (SHARE, ["package.xml"]),
        (f"{SHARE}/launch", share_files("launch", "*.launch.py")),
        (f"{SHARE}/config", share_files("config", "*")),
        (f"{SHARE}/weights", share_files("weights", "*")),
    ],
    python_requires=">=3.10",
    # Run-time dependencies come from requirements.txt in a virtual environment and from
    # apt/rosdep or the Docker image on ROS machines; listing them here would make the
    # generated entry-point scripts refuse to start where apt, not pip, provides them.
    install_requires=["setuptools"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "seg_node = seg_node.ros.process:main",
            "seg-train = seg_node.cli.train:main",
            "seg-eval = seg_node.cli.eval:main",
            "seg-export = seg_node.cli.export:main",
            "seg-healthcheck = seg_node.cli.healthcheck:main",
            "seg-replay = seg_node.cli.replay:main",
            "seg-make-bag = seg_node.cli.make_bag:main",
            "seg-demo = seg_node.cli.demo:main",
            "seg-bench = seg_node.cli.bench:main",
            "seg-gpu-check = seg_node.cli.gpu_check:main",
            "seg-prebuild = seg_node.cli.prebuild:main",
            "seg-campaign = seg_node.cli.campaign:main",
            "seg-split-drives = seg_node.cli.split_drives:main",
        ],
    },
)
