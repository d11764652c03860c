"""The documentation: docs/node.md's generated tables match the code (tools/node_reference.py), the README stays
short and links every docs page, and every relative link in them leads to a file."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
README_MAX_LINES = 300
LINK = re.compile(r"\[[^\]]*\]\(([^)\s#]+)(?:#[^)]*)?\)")


def load_tool():
    spec = importlib.util.spec_from_file_location("node_reference", REPO_ROOT / "tools" / "node_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    pytest.importorskip("rclpy", reason="seg_node.ros.parameters, the parameters' source, imports rclpy")
    return load_tool()


@pytest.fixture(scope="module")
def page() -> str:
    return (DOCS / "node.md").read_text()


def test_node_reference_matches_the_code(tool, page, capsys):
    assert tool.stale_tables(page, tool.tables()) == [], f"docs/node.md is stale: run python {tool.COMMAND}"
    assert tool.main(["--check"]) == 0
    assert "is current" in capsys.readouterr().out


def test_a_parameter_added_without_its_doc_makes_the_check_fail(tool, page, monkeypatch, capsys):
    from seg_node.ros import parameters

    monkeypatch.setitem(parameters.SPECS, "tile_count", parameters.Spec(4, "tiles per frame", (), 1, 16))
    generated = tool.tables()
    assert tool.stale_tables(page, generated) == ["parameters"]
    assert "| `tile_count` | integer | `4` | 1..16 | read-only | tiles per frame |" in generated["parameters"]
    assert tool.main(["--check"]) == 1
    assert "parameters" in capsys.readouterr().err


def test_a_launch_argument_added_without_its_doc_makes_the_page_stale(tool, page):
    source = (REPO_ROOT / "launch" / "segment.launch.py").read_text()
    declared = tool.launch_arguments(source)
    assert [name for name, _, _ in declared][:3] == ["weights", "backend", "camera_topic"]
    assert ("params_file", "$(find-pkg-share seg_node)/config/seg_node.yaml", "parameter YAML") in declared
    added = source.replace('DeclareLaunchArgument("rviz"',
                           'DeclareLaunchArgument("frame_rate", default_value="30", description="fps"),\n'
                           '        DeclareLaunchArgument("rviz"', 1)
    rows = tool.launch_rows(tool.launch_arguments(added))
    assert "| `frame_rate` | `30` | fps |" in rows
    assert tool.stale_tables(page, {"launch-arguments": rows}) == ["launch-arguments"]


def test_a_topic_without_its_description_stops_the_generator(tool):
    from seg_node.ros.topics import OUTPUTS

    sources = {path.name: path.read_text() for path in sorted(tool.ROS_FOLDER.glob("*.py"))}
    found = [topic.name for topic in tool.topics(OUTPUTS, sources)]
    assert "`~/<camera>/label`" in found and "`/diagnostics`" in found and "`~/classes`" in found
    # a topic named by a module's constant (label_info.TOPIC) and the outputs' compressed siblings
    assert "`~/label_info`" in found and "`~/<camera>/<output>/compressed`" in found
    with pytest.raises(tool.ReferenceError, match="depth"):  # an output in OUTPUTS that nothing publishes
        tool.topics((*OUTPUTS, "depth"), sources)
    sources["extra.py"] = ("from std_msgs.msg import String\n"
                           "def make(node):\n    node.create_publisher(String, '~/status_text', 1)\n")
    with pytest.raises(tool.ReferenceError, match="status_text"):
        tool.topics(OUTPUTS, sources)


def test_a_page_without_the_markers_is_refused(tool):
    with pytest.raises(tool.ReferenceError, match="BEGIN generated: parameters"):
        tool.render("# a page without markers\n", {"parameters": ["| a |"]})


def test_the_readme_names_every_launch_argument_and_only_parameters_that_exist(tool):
    readme = README.read_text()
    declared = [name for name, _, _ in tool.launch_arguments((REPO_ROOT / "launch" / "segment.launch.py").read_text())]
    unnamed = [name for name in declared if f"`{name}`" not in readme]
    assert not unnamed, f"README.md's launch arguments lack {unnamed}"
    table = readme[readme.index("Main parameters"):readme.index("Launch arguments (")]
    named = {name for row in table.splitlines() if row.startswith("| `")
             for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    from seg_node.ros.parameters import SPECS

    assert named and named <= set(SPECS), f"README.md names parameters the node lacks: {sorted(named - set(SPECS))}"


def test_readme_is_at_most_300_lines():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to a page under docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO_ROOT / target).resolve() for target in LINK.findall(README.read_text())}
    pages = sorted(DOCS.glob("*.md")) + sorted(DOCS.glob("*/README.md"))
    assert pages, "no pages under docs/"
    unlinked = [str(page.relative_to(REPO_ROOT)) for page in pages if page.resolve() not in linked]
    assert not unlinked, f"link these from README.md: {unlinked}"


@pytest.mark.parametrize("document", [README, *sorted(DOCS.rglob("*.md")), REPO_ROOT / "weights" / "README.md"],
                         ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_relative_links_lead_to_files(document: Path):
    targets = [target for target in LINK.findall(document.read_text()) if "://" not in target]
    missing = [target for target in targets if not (document.parent / target).exists()]
    assert not missing, f"{document.relative_to(REPO_ROOT)} links to missing files: {missing}"
