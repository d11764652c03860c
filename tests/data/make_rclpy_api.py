"""Write the public API of one rclpy release as JSON: the data of ``tests/test_humble_api.py``.

    python tests/data/make_rclpy_api.py RCLPY_GIT_DIR [--ref humble] [--out tests/data/rclpy_humble_api.json]

RCLPY_GIT_DIR is a clone (bare or not) of https://github.com/ros2/rclpy; every ``rclpy/rclpy/**/*.py`` at
``--ref`` is read with ``git show <commit>:<path>`` and parsed with ``ast`` (nothing is imported or run), so
the result describes exactly that commit, and the test needs neither network nor ROS.

For each module (``rclpy``, ``rclpy.node``, ``rclpy.lifecycle``, ``rclpy.lifecycle.node``, ...) the JSON holds:

* ``names``: every name the module binds at import time: functions, classes, assignments, imports
  (re-exports); names inside ``if TYPE_CHECKING:`` exist only for type checkers and are left out.
* ``refs``: which of those names stand for an rclpy module, class or function defined elsewhere
  ("rclpy.node", "rclpy.node:Node", "rclpy.utilities:ok"),
  through imports and plain aliases (``Node = LifecycleNode``), so that a user's name can be followed.
* ``functions``: the parameters of each top-level function (for keyword-argument checks).
* ``classes``: for each class (nested classes as ``Outer.Inner``): ``bases`` (rclpy classes as
  "module:Class", others as dotted names), ``mro`` (the rclpy classes it inherits from, itself first),
  ``external_bases`` (non-rclpy bases anywhere in that mro: their attributes are not listed here),
  ``members`` (its own methods, properties, class attributes, nested classes, ``__slots__`` and the
  ``self.x = ...`` attributes its methods assign), ``all_members`` (``members`` of the whole mro) and
  ``methods`` (the parameters of each own method).
* for each function and method: ``params``, ``varargs``, ``varkw``, ``property`` (a ``@property``) and
  ``returns``: the rclpy class its return annotation names ("rclpy.subscription:Subscription"; also
  through ``Optional[...]``, ``... | None`` and a quoted name), else None, so that the test can type
  what ``create_subscription``, ``call_async`` or ``get_clock`` return.

The file records the commit, the ref and the command that produced it (``generated_by``).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: its helper modules
from python_source import dotted, resolve_from, runtime_statements, self_stores  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "rclpy_humble_api.json"
SOURCE_ROOT = "rclpy/rclpy/"


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], check=True, capture_output=True, text=True).stdout


def module_name(path: str) -> str:
    """rclpy/rclpy/lifecycle/node.py -> rclpy.lifecycle.node; .../__init__.py -> its package."""
    parts = path[len("rclpy/") : -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in target_names(element)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return []


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> dict:
    """Its parameters, whether it is a property, and its return annotation's class (resolved in ``to_json``)."""
    args = function.args
    return {
        "params": [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]],
        "varargs": args.vararg is not None,
        "varkw": args.kwarg is not None,
        "property": any(dotted(d) == "property" for d in function.decorator_list),
        "returns": returned_class(function.returns),
    }


def returned_class(annotation: ast.expr | None) -> str | None:
    """The dotted name of the one class a return annotation names: ``Subscription``, ``'Future'``,
    ``Optional[Executor]`` and ``Executor | None`` (None aside); None for anything else (``List[X]``, ``bool``)."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # a forward reference
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(annotation, ast.Subscript) and dotted(annotation.value) in ("Optional", "typing.Optional"):
        return returned_class(annotation.slice)
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [annotation.left, annotation.right]
        others = [side for side in sides if not (isinstance(side, ast.Constant) and side.value is None)]
        return returned_class(others[0]) if len(others) == 1 else None
    return dotted(annotation) if isinstance(annotation, (ast.Name, ast.Attribute)) else None


class ModuleScan:
    def __init__(self, name: str, is_package: bool, tree: ast.Module) -> None:
        self.name = name
        self.is_package = is_package
        self.names: set[str] = set()
        self.imports: dict[str, str] = {}  # local name -> "module" or "module:Name" (any package)
        self.aliases: dict[str, str] = {}  # local name -> the local name it copies (X = Y)
        self.functions: dict[str, dict] = {}
        self.classes: dict[str, dict] = {}  # qualified within the module: "Parameter.Type"
        self.all: list[str] | None = None
        self.star_imports: list[str] = []
        for statement in runtime_statements(tree.body, type_checking=False):
            self.top_level(statement)

    def top_level(self, statement: ast.stmt) -> None:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.names.add(statement.name)
            self.functions[statement.name] = parameters(statement)
        elif isinstance(statement, ast.ClassDef):
            self.names.add(statement.name)
            self.scan_class(statement, statement.name)
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                if alias.asname:
                    self.names.add(alias.asname)
                    self.imports[alias.asname] = alias.name
                else:  # import a.b binds a
                    first = alias.name.split(".")[0]
                    self.names.add(first)
                    self.imports[first] = first
        elif isinstance(statement, ast.ImportFrom):
            source = resolve_from(self.name, self.is_package, statement)
            for alias in statement.names:
                if alias.name == "*":  # expanded once every module is scanned
                    self.star_imports.append(source)
                    continue
                local = alias.asname or alias.name
                self.names.add(local)
                self.imports[local] = f"{source}:{alias.name}"
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for name in target_names(target):
                    self.names.add(name)
                    if isinstance(statement.value, ast.Name) and len(targets) == 1:
                        self.aliases[name] = statement.value.id
                    if name == "__all__" and isinstance(statement.value, (ast.List, ast.Tuple)):
                        self.all = [e.value for e in statement.value.elts if isinstance(e, ast.Constant)]

    def scan_class(self, node: ast.ClassDef, qualified: str) -> None:
        members: set[str] = set()
        methods: dict[str, dict] = {}
        for statement in runtime_statements(node.body, type_checking=False):
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                members.add(statement.name)
                methods[statement.name] = parameters(statement)
                members.update(attribute.attr for attribute, _, _ in self_stores(statement))
            elif isinstance(statement, ast.ClassDef):
                members.add(statement.name)
                self.scan_class(statement, f"{qualified}.{statement.name}")
            elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                for target in targets:
                    for name in target_names(target):
                        members.add(name)
                        if name == "__slots__" and isinstance(statement.value, (ast.List, ast.Tuple)):
                            members.update(e.value for e in statement.value.elts if isinstance(e, ast.Constant))
        self.classes[qualified] = {
            "bases": [dotted(base) or ast.unparse(base) for base in node.bases],
            "members": members,
            "methods": methods,
        }


class Api:
    def __init__(self, scans: dict[str, ModuleScan]) -> None:
        self.scans = scans
        for scan in scans.values():
            self.expand_star_imports(scan, frozenset())

    def expand_star_imports(self, scan: ModuleScan, seen: frozenset) -> None:
        """``from rclpy.x import *``: the public names of rclpy.x (its ``__all__`` when it has one)."""
        while scan.star_imports:
            source = self.scans.get(scan.star_imports.pop(0))
            if source is None or source.name in seen:
                continue
            self.expand_star_imports(source, seen | {scan.name})
            exported = source.all if source.all is not None else [n for n in source.names if not n.startswith("_")]
            for name in exported:
                scan.names.add(name)
                scan.imports.setdefault(name, f"{source.name}:{name}")

    def follow(self, module: str, name: str, seen: frozenset = frozenset()) -> str | None:
        """What ``name`` in rclpy ``module`` stands for: "rclpy.x" (a module), "rclpy.x:Name" (a class or a
        function), or None (a value, or something from outside rclpy)."""
        if (module, name) in seen:
            return None
        seen = seen | {(module, name)}
        scan = self.scans.get(module)
        if scan is None:
            return None
        if name in scan.classes or name in scan.functions:
            return f"{module}:{name}"
        if name in scan.aliases:
            return self.follow(module, scan.aliases[name], seen)
        if name in scan.imports:
            return self.follow_ref(scan.imports[name], seen)
        if name not in scan.names and f"{module}.{name}" in self.scans:
            return f"{module}.{name}"  # a submodule, an attribute of its package once imported
        return None

    def follow_ref(self, ref: str, seen: frozenset = frozenset()) -> str | None:
        if ":" not in ref:
            return ref if ref in self.scans else None
        source, name = ref.split(":", 1)
        if source in self.scans:
            return self.follow(source, name, seen)
        return None

    def resolve_base(self, module: str, base: str) -> str:
        """A base class expression as "rclpy.x:Class" when it is an rclpy class, else a dotted name."""
        head, _, rest = base.partition(".")
        scan = self.scans[module]
        if not rest and base in scan.classes:
            return f"{module}:{base}"
        target = self.follow(module, head)
        if target is not None:
            if not rest:
                return target
            if ":" not in target:  # module.Class
                found = self.follow(target, rest)
                if found:
                    return found
        if head in scan.imports:  # a non-rclpy import: enum.IntEnum, typing.Generic
            imported = scan.imports[head].replace(":", ".")
            return f"{imported}.{rest}" if rest else imported
        if hasattr(builtins, head):
            return f"builtins.{base}"
        return base

    def resolve_returns(self, module: str, signature: dict) -> dict:
        """``returns`` as "rclpy.x:Class" when it names an rclpy class, else None."""
        name = signature["returns"]
        resolved = self.resolve_base(module, name) if name else None
        is_class = resolved is not None and ":" in resolved and resolved.split(":", 1)[0] in self.scans
        if is_class:
            class_module, class_name = resolved.split(":", 1)
            is_class = class_name in self.scans[class_module].classes
        return {**signature, "returns": resolved if is_class else None}

    def mro(self, ref: str, seen: tuple = ()) -> tuple[list[str], list[str]]:
        """The rclpy classes ``ref`` inherits from (itself first, depth first) and its other bases."""
        if ref in seen:
            return [], []
        module, name = ref.split(":", 1)
        classes, external = [ref], []
        for base in self.scans[module].classes[name]["bases"]:
            resolved = self.resolve_base(module, base)
            if ":" in resolved and resolved.split(":", 1)[0] in self.scans:
                more, ext = self.mro(resolved, (*seen, ref))
                classes += [c for c in more if c not in classes]
                external += [e for e in ext if e not in external]
            elif resolved not in external:
                external.append(resolved)
        return classes, external

    def to_json(self) -> dict:
        modules = {}
        for module, scan in sorted(self.scans.items()):
            refs = {}
            for name in sorted(scan.names | {n.split(".")[0] for n in scan.classes}):
                target = self.follow(module, name)
                if target is not None and target != f"{module}:{name}":
                    refs[name] = target
            classes = {}
            for name, info in sorted(scan.classes.items()):
                ref = f"{module}:{name}"
                mro, external = self.mro(ref)
                all_members = set()
                for cls in mro:
                    cls_module, cls_name = cls.split(":", 1)
                    all_members |= self.scans[cls_module].classes[cls_name]["members"]
                classes[name] = {
                    "bases": [self.resolve_base(module, base) for base in info["bases"]],
                    "mro": mro,
                    "external_bases": external,
                    "members": sorted(info["members"]),
                    "all_members": sorted(all_members),
                    "methods": {
                        method: self.resolve_returns(module, signature)
                        for method, signature in sorted(info["methods"].items())
                    },
                }
            modules[module] = {
                "is_package": scan.is_package,
                "names": sorted(scan.names),
                "refs": refs,
                "all": scan.all,
                "functions": {
                    function: self.resolve_returns(module, signature)
                    for function, signature in sorted(scan.functions.items())
                },
                "classes": classes,
            }
        return modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("git_dir", help="a clone (bare or not) of https://github.com/ros2/rclpy")
    parser.add_argument("--ref", default="humble", help="branch, tag or commit (default: humble)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    git_dir = args.git_dir
    if (Path(git_dir) / ".git").exists():
        git_dir = str(Path(git_dir) / ".git")
    commit = git(git_dir, "rev-parse", "--verify", f"{args.ref}^{{commit}}").strip()
    package_xml = git(git_dir, "show", f"{commit}:rclpy/package.xml")
    version = re.search(r"<version>([^<]+)</version>", package_xml)
    paths = [
        p for p in git(git_dir, "ls-tree", "-r", "--name-only", commit, SOURCE_ROOT).splitlines() if p.endswith(".py")
    ]
    scans = {}
    for path in sorted(paths):
        name = module_name(path)
        tree = ast.parse(git(git_dir, "show", f"{commit}:{path}"), filename=path)
        scans[name] = ModuleScan(name, path.endswith("/__init__.py"), tree)
    command = ["python", "tests/data/make_rclpy_api.py", *(sys.argv[1:] if argv is None else argv)]
    document = {
        "description": "rclpy's API at one commit, parsed with ast from rclpy/rclpy/**/*.py; "
        "see tests/data/make_rclpy_api.py",
        "source": "https://github.com/ros2/rclpy",
        "ref": args.ref,
        "commit": commit,
        "version": version.group(1) if version else None,
        "generated_by": shlex.join(command),
        "modules": Api(scans).to_json(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{args.out}: rclpy {document['version']} at {commit}, {len(scans)} modules", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
