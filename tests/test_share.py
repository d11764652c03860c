"""The one helper that finds the package's share files (config/, launch/, weights/), used by every caller."""

from __future__ import annotations

import sys

import pytest
from conftest import PACKAGE_ROOT

from seg_node import weights
from seg_node.share import ShareFileNotFoundError, share_file, share_folders


def test_the_checkout_is_the_last_share_folder_and_holds_the_package_files():
    assert share_folders()[-1] == PACKAGE_ROOT
    found = share_file("config/fastdds_shm.xml")
    assert found.is_file() and found.parts[-2:] == ("config", "fastdds_shm.xml")


def test_the_environments_share_folder_wins_over_the_checkout(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ament_index_python.packages", None)  # no ROS environment: pip's install
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    installed = tmp_path / "share" / "seg_node" / "config" / "seg_node.yaml"
    installed.parent.mkdir(parents=True)
    installed.write_text("seg_node: {}\n")
    assert share_folders() == [tmp_path / "share" / "seg_node", PACKAGE_ROOT]
    assert share_file("config/seg_node.yaml") == installed
    assert share_file("config/fastdds_shm.xml") == PACKAGE_ROOT / "config" / "fastdds_shm.xml"


def test_a_missing_file_names_itself_and_every_folder_searched():
    with pytest.raises(ShareFileNotFoundError, match=r"config/no_such\.xml not found in .*") as caught:
        share_file("config/no_such.xml")
    assert isinstance(caught.value, FileNotFoundError)
    assert str(PACKAGE_ROOT / "config" / "no_such.xml") in str(caught.value)


def test_weights_are_searched_in_the_same_share_folders(monkeypatch):
    monkeypatch.delenv("SEG_NODE_WEIGHTS_DIR", raising=False)
    assert weights.weights_search_path() == [folder / "weights" for folder in share_folders()]
