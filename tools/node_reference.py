"""Write the node's reference tables into docs/node.md from the code; ``--check`` says whether the page is current.

    python tools/node_reference.py            # rewrite the generated tables in docs/node.md
    python tools/node_reference.py --check    # exit 1 (naming the stale tables) when the page and the code differ

Three tables, each between ``<!-- BEGIN generated: NAME -->`` and ``<!-- END generated: NAME -->`` markers in
the page (the text around them is written by hand):

- ``parameters``: every node parameter from ``seg_node.ros.parameters.SPECS`` (which derives the engine's from
  ``seg_node.engine.options.ENGINE_OPTIONS``): name, type, default, range or choices, run-time changes, description;
- ``launch-arguments``: every ``DeclareLaunchArgument`` of ``launch/segment.launch.py``, read with ``ast`` (no ROS);
- ``topics``: what the node subscribes to and publishes, found with ``ast`` in ``seg_node/ros/*.py``: the per-camera
  outputs of ``seg_node.ros.topics.OUTPUTS`` and every publisher and subscription with their message types. Topics
  are described in TOPIC_NOTES below; a topic the code has and TOPIC_NOTES lacks stops the script, naming it.

It reads the code of this checkout (``ros2_ws/src/seg_node`` goes first on the path), so run it from anywhere
with any Python that has the package's dependencies and rclpy (e.g. ``.venv/bin/python``).
Exit status: 0 done (or current), 1 the page is stale (--check), 2 the page or the code cannot be read.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = REPO_ROOT / "ros2_ws" / "src" / "seg_node"
ROS_FOLDER = PACKAGE_ROOT / "seg_node" / "ros"
LAUNCH_FILE = REPO_ROOT / "launch" / "segment.launch.py"
PAGE = REPO_ROOT / "docs" / "node.md"
COMMAND = "python tools/node_reference.py"

# What each topic carries, by the topic expression the code uses (per-camera outputs by their OUTPUTS name).
TOPIC_NOTES = {
    "camera.topic": "each entry of `cameras`: the camera's images; a name ending in `/compressed` is read as "
                    "`CompressedImage` (JPEG or PNG), any other as `Image`",
    "camera.info_topic": "the camera's calibration, the sibling `camera_info` of its image topic "
                         "(`image` -> `camera_info`, `/front/image_raw` -> `/front/camera_info`); optional",
    "label": "mono8 class ids at the input's size (or the network's, `output_resolution: network`); always published",
    "color_mask": "rgb8: the labels in the palette's colours",
    "overlay": "rgb8: the input blended with the colour mask (`overlay_alpha`), at input size",
    "confidence": "mono8: max softmax x 255; only with `publish_confidence: true`",
    "camera_info": "the camera's calibration for the label's size, with the label's header",
    "~/classes": "latched (transient local) JSON: model, data set, `[{id, name, color}]`; re-sent when `palette` "
                 "changes",
    "/diagnostics": "the engine's and each camera's status, every `diagnostics_period_s`",
    "~/label_info": "latched (transient local) class ids and names, where `vision_msgs` is installed "
                    "(`ros-<distro>-vision-msgs`); otherwise off, said once at configure",
    "compressed": "label, colour mask, overlay (and confidence) as image_transport's compressed transport names "
                  "and fills them: PNG for the label, colour mask and confidence (lossless), JPEG for the overlay; "
                  "encoded on a thread of its own, only while someone subscribes",
}
CAMERA_OUTPUT = "~/<camera>/{}"
COMPRESSED_OUTPUTS = "~/<camera>/<output>/compressed"
INPUT_NAMES = {"camera.topic": "`<camera>` (input)", "camera.info_topic": "`<camera's camera_info>` (input)"}
PUBLISH_CALLS = ("create_publisher", "create_lifecycle_publisher")


class ReferenceError(Exception):
    """The code or the page cannot be read as this script expects; the message says what to fix."""


# --- parameters -----------------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """Table cell text: pipes escaped, newlines flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _code(value: object) -> str:
    return f"`{value}`" if value != "" else "`\"\"`"


def _parameter_type(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "integer"
    if isinstance(default, float):
        return "double"
    if isinstance(default, str):
        return "string"
    if isinstance(default, list):
        kinds = {_parameter_type(item) for item in default} or {"string"}
        return f"{kinds.pop()} array"
    return str(getattr(default, "name", default)).lower().replace("_", " ")  # a Parameter.Type: no default


def _parameter_default(default: Any) -> str:
    if isinstance(default, bool):
        return _code(str(default).lower())
    if isinstance(default, (int, float, str)):
        return _code(default)
    if isinstance(default, list):
        return _code("[" + ", ".join(f'"{item}"' if isinstance(item, str) else str(item) for item in default) + "]")
    return "unset"


def _parameter_range(spec: Any) -> str:
    if spec.choices:
        return ", ".join(f"`{choice}`" for choice in spec.choices)
    if spec.minimum is None and spec.maximum is None:
        return ""
    low = "" if spec.minimum is None else spec.minimum
    high = "" if spec.maximum is None else spec.maximum
    return f"{low}..{high}"


def parameter_rows(specs: dict[str, Any]) -> list[str]:
    rows = ["| parameter | type | default | range / choices | at run time | description |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, spec in specs.items():
        rows.append(f"| `{name}` | {_parameter_type(spec.default)} | {_cell(_parameter_default(spec.default))} | "
                    f"{_cell(_parameter_range(spec))} | {'may change' if spec.dynamic else 'read-only'} | "
                    f"{_cell(spec.description)} |")
    return rows


def _this_checkout_first() -> None:
    if str(PACKAGE_ROOT) not in sys.path:
        sys.path.insert(0, str(PACKAGE_ROOT))


def load_specs() -> dict[str, Any]:
    """The node's parameter specs from this checkout's code (needs rclpy, which seg_node.ros imports)."""
    _this_checkout_first()
    try:
        from seg_node.ros.parameters import SPECS
    except ImportError as error:
        raise ReferenceError(f"cannot import seg_node.ros.parameters ({error}); run it with a Python that has "
                             f"rclpy and the package's dependencies, e.g. .venv/bin/python tools/node_reference.py"
                             ) from error
    return SPECS


# --- launch arguments -----------------------------------------------------------------------------------------


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    return {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _local_assignments(function: ast.FunctionDef) -> dict[str, ast.expr]:
    return {target.id: node.value for node in ast.walk(function) if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _render(node: ast.expr, names: dict[str, ast.expr]) -> str:
    """A default value as a user reads it: literals, names followed to their value, os.path.join as a path and
    the package's share folder as launch's ``$(find-pkg-share PACKAGE)``; anything else as its source."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.Name) and node.id in names:
        return _render(names[node.id], names)
    if isinstance(node, ast.Call):
        function = ast.unparse(node.func)
        if function == "os.path.join":
            return "/".join(_render(arg, names) for arg in node.args)
        if function == "get_package_share_directory" and len(node.args) == 1:
            return f"$(find-pkg-share {_render(node.args[0], names)})"
    return ast.unparse(node)


def _keyword(call: ast.Call, name: str, position: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def launch_arguments(source: str) -> list[tuple[str, str, str]]:
    """(name, default, description) of every DeclareLaunchArgument in a launch file's source, in order."""
    tree = ast.parse(source)
    constants = _module_constants(tree)
    arguments = []
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        names = {**constants, **_local_assignments(function)}
        for call in ast.walk(function):
            if not (isinstance(call, ast.Call) and ast.unparse(call.func).endswith("DeclareLaunchArgument")):
                continue
            name, default, description = (_keyword(call, key, index) for index, key in
                                          enumerate(("name", "default_value", "description")))
            if name is None:
                raise ReferenceError(f"{LAUNCH_FILE.name}:{call.lineno}: a DeclareLaunchArgument without a name")
            arguments.append((_render(name, names), "" if default is None else _render(default, names),
                              "" if description is None else _render(description, names)))
    if not arguments:
        raise ReferenceError(f"no DeclareLaunchArgument found in {LAUNCH_FILE}")
    return arguments


def launch_rows(arguments: list[tuple[str, str, str]]) -> list[str]:
    rows = ["| argument | default | description |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | {_cell(_code(default))} | {_cell(text)} |" for name, default, text in arguments]
    return rows


# --- topics ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    name: str  # as the table shows it
    message: str  # package/Type
    direction: str  # "subscribes" or "publishes"
    note: str


def _message_packages(tree: ast.Module) -> dict[str, str]:
    """Message class name -> ``package/Name`` from ``from <package>.msg import ...`` lines."""
    return {alias.asname or alias.name: f"{node.module.split('.')[0]}/{alias.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".msg")
            for alias in node.names}


def _message_of(name: str, trees: dict[str, ast.Module]) -> str:
    """A message class named in any ros/ module's ``from <package>.msg import`` lines (a publisher in one module of a
    type another imports: ``label_info.LabelInfo``), as ``package/Name``."""
    for tree in trees.values():
        if name in (packages := _message_packages(tree)):
            return f"`{packages[name]}`"
    return f"`{name}`"


def _messages(node: ast.expr, packages: dict[str, str]) -> str:
    """``Image``, or ``CompressedImage if c else Image``, as ``sensor_msgs/Image`` (or both, with "or")."""
    if isinstance(node, ast.IfExp):
        return f"{_messages(node.body, packages)} or {_messages(node.orelse, packages)}"
    name = ast.unparse(node)
    return f"`{packages.get(name, name)}`"


def _note(key: str) -> str:
    if key not in TOPIC_NOTES:
        raise ReferenceError(f"the node uses topic {key!r}, which tools/node_reference.py's TOPIC_NOTES does not "
                             f"describe: add what it carries there, then run {COMMAND}")
    return TOPIC_NOTES[key]


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _output_helpers(tree: ast.Module) -> dict[str, ast.expr]:
    """Functions called with an output's name, by name -> their default message type (``def publisher(output,
    message_type=Image)``)."""
    helpers = {}
    for function in (node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))):
        calls_output_topic = any(ast.unparse(call.func).endswith("output_topic") for call in _calls(function))
        if calls_output_topic and function.args.defaults:
            helpers[function.name] = function.args.defaults[-1]
    return helpers


def _topic_constant(node: ast.expr, constants: dict[str, str]) -> str | None:
    """A topic given as a string, or as a module's string constant (``TOPIC``, ``label_info.TOPIC``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return constants.get(ast.unparse(node))


def _string_constants(trees: dict[str, ast.Module]) -> dict[str, str]:
    """Module-level string constants of the ros/ modules, as ``NAME`` within their module and ``module.NAME``."""
    constants = {}
    for file_name, tree in trees.items():
        for name, value in _module_constants(tree).items():
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                constants[f"{Path(file_name).stem}.{name}"] = value.value
    return constants


def _is_compressed_output(node: ast.expr) -> bool:
    """``output_topic(camera, output) + COMPRESSED_SUFFIX``: a per-camera output's compressed sibling."""
    return (isinstance(node, ast.BinOp) and isinstance(node.left, ast.Call)
            and ast.unparse(node.left.func).endswith("output_topic") and "COMPRESSED_SUFFIX" in ast.unparse(node.right))


def topics(outputs: Sequence[str], sources: dict[str, str]) -> list[Topic]:
    """Subscriptions, per-camera outputs (in OUTPUTS order), their compressed siblings and node-wide publishers
    found in ``sources``."""
    inputs, camera_outputs, compressed, node_outputs = [], {}, [], []
    trees = {file_name: ast.parse(source, file_name) for file_name, source in sources.items()}
    module_constants = _string_constants(trees)
    for file_name, tree in trees.items():
        packages = _message_packages(tree)
        helpers = _output_helpers(tree)
        own = {name.split(".", 1)[1]: value for name, value in module_constants.items()
               if name.startswith(f"{Path(file_name).stem}.")}
        constants = {**module_constants, **own}
        for call in _calls(tree):
            function = ast.unparse(call.func)
            method = function.rsplit(".", 1)[-1]
            first = call.args[0] if call.args else None
            if method == "create_subscription" and len(call.args) >= 2:
                key = ast.unparse(call.args[1])
                inputs.append(Topic(INPUT_NAMES.get(key, f"`{key}`"), _messages(call.args[0], packages),
                                    "subscribes", _note(key)))
            elif method in PUBLISH_CALLS and len(call.args) >= 2 and _is_compressed_output(call.args[1]):
                compressed.append(Topic(f"`{COMPRESSED_OUTPUTS}`", _messages(call.args[0], packages), "publishes",
                                        _note("compressed")))
            elif method in PUBLISH_CALLS and len(call.args) >= 2 and _topic_constant(call.args[1], constants):
                key = _topic_constant(call.args[1], constants)
                message = ast.unparse(call.args[0]).rsplit(".", 1)[-1]
                node_outputs.append(Topic(f"`{key}`", _message_of(message, trees), "publishes", _note(key)))
            elif function in helpers and isinstance(first, ast.Constant) and first.value in outputs:
                message = call.args[1] if len(call.args) > 1 else helpers[function]
                camera_outputs[first.value] = Topic(f"`{CAMERA_OUTPUT.format(first.value)}`",
                                                    _messages(message, packages), "publishes", _note(first.value))
    missing = [output for output in outputs if output not in camera_outputs]
    if missing:
        raise ReferenceError(f"no publisher found in seg_node/ros/ for the outputs {missing} of OUTPUTS; "
                             f"tools/node_reference.py looks for calls like publisher(\"label\", Image) in a "
                             f"function that calls output_topic")
    return inputs + [camera_outputs[output] for output in outputs] + compressed + node_outputs


def topic_rows(found: list[Topic]) -> list[str]:
    rows = ["| topic | type | direction | content |", "| --- | --- | --- | --- |"]
    rows += [f"| {topic.name} | {topic.message} | {topic.direction} | {_cell(topic.note)} |" for topic in found]
    return rows


def load_topics() -> list[Topic]:
    _this_checkout_first()
    from seg_node.ros.topics import OUTPUTS  # no rclpy there

    sources = {path.name: path.read_text() for path in sorted(ROS_FOLDER.glob("*.py"))}
    return topics(OUTPUTS, sources)


# --- the page -------------------------------------------------------------------------------------------------


def tables() -> dict[str, list[str]]:
    """The generated tables, by marker name."""
    return {
        "parameters": parameter_rows(load_specs()),
        "launch-arguments": launch_rows(launch_arguments(LAUNCH_FILE.read_text())),
        "topics": topic_rows(load_topics()),
    }


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN generated: {re.escape(name)} [^\n]*-->\n)(.*?)(<!-- END generated: "
                      rf"{re.escape(name)} -->)", re.DOTALL)


def render(page: str, generated: dict[str, list[str]]) -> str:
    """``page`` with every generated block replaced; ReferenceError when a block's markers are missing."""
    for name, rows in generated.items():
        block = _block(name)
        if not block.search(page):
            raise ReferenceError(f"{PAGE.relative_to(REPO_ROOT)} has no '<!-- BEGIN generated: {name} ... -->' ... "
                                 f"'<!-- END generated: {name} -->' block")
        page = block.sub(lambda match, rows=rows: match.group(1) + "\n".join(rows) + "\n" + match.group(3), page)
    return page


def stale_tables(page: str, generated: dict[str, list[str]]) -> list[str]:
    """Names of the generated blocks whose text on ``page`` differs from the code's."""
    return [name for name in generated if render(page, {name: generated[name]}) != page]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the page is stale")
    args = parser.parse_args(argv)
    try:
        page = PAGE.read_text()
        generated = tables()
        stale = stale_tables(page, generated)
    except (OSError, SyntaxError, ReferenceError) as error:
        print(f"{COMMAND}: {error}", file=sys.stderr)
        return 2
    if args.check:
        if stale:
            print(f"{PAGE.relative_to(REPO_ROOT)}: the {', '.join(stale)} table(s) differ from the code; "
                  f"run {COMMAND}", file=sys.stderr)
            return 1
        print(f"{PAGE.relative_to(REPO_ROOT)} is current")
        return 0
    if stale:
        PAGE.write_text(render(page, generated))
        print(f"{PAGE.relative_to(REPO_ROOT)}: rewrote {', '.join(stale)}")
    else:
        print(f"{PAGE.relative_to(REPO_ROOT)} is current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
