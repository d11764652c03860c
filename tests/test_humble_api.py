"""seg_node uses only rclpy API that ROS 2 Humble has (the oldest distribution it supports).

Humble's rclpy API is ``tests/data/rclpy_humble_api.json``: every module, top-level name and class member
of rclpy's ``humble`` branch, parsed from its source at one commit by ``tests/data/make_rclpy_api.py``
(the commit and the command are in the file). The checker below reads the package's own source
(``ros2_ws/src/seg_node/seg_node/**/*.py`` and the launch files) with ``ast``; nothing is imported, so it
runs the same on any distribution, or with no ROS at all.

What is checked, where it can be known without running anything:

* imports: ``import rclpy.X`` names a Humble module; ``from rclpy.X import Y`` names a module, and a
  name (or submodule) that Humble's ``rclpy.X`` binds at import time;
* attributes of rclpy modules and classes: ``rclpy.spin_once``, ``rclpy.logging.get_logger``,
  ``Parameter.Type.INTEGER_ARRAY``, ``ReliabilityPolicy.RELIABLE``;
* attributes of objects whose rclpy class is known: ``self.<name>`` in a package class deriving from an
  rclpy class (``Node``, ``LifecycleNode``, ...) must be defined by the class itself, its package-local
  bases or Humble's rclpy bases (inherited members included: ``LifecycleNode`` inherits ``Node``);
  likewise a parameter annotated with an rclpy class (``node: Node``), a variable or ``self.x``
  attribute assigned only from an rclpy constructor (``x = SingleThreadedExecutor()``), and dataclass
  fields annotated with an rclpy class (``label: Publisher``);
* attributes of what rclpy calls return, typed by the return annotation Humble's source gives them:
  ``node.create_subscription(...)`` is a Subscription, ``client.call_async(...)`` a Future,
  ``node.get_clock()`` a Clock, a property such as ``node.context`` a Context; also through a variable,
  a ``self.x`` attribute, and the lists a class fills (``self.subs.append(self.create_subscription(...))``,
  ``self.x = [...]``, ``+=``, ``extend``) into ``for`` loops and comprehensions over them. rclpy methods
  that Humble leaves unannotated (``create_lifecycle_publisher``, ``get_logger``) stay unchecked;
* keyword arguments of calls to rclpy functions, constructors and methods so resolved (for instance
  ``create_subscription(..., raw=True)``), unless the callee takes ``**kwargs``.

A newer API is allowed only behind a feature check:

* inside the body of ``if hasattr(<obj>, "<name>"):`` (also ``elif``, ``x if hasattr(...) else y``, and
  ``hasattr(...) and ...``), uses of ``.<name>`` (on any object: the check names the feature) are not
  reported; in the ``else`` of ``if not hasattr(<obj>, "<name>"):`` likewise; code after an early
  ``return`` is not taken as guarded, so keep the newer call inside the ``if``;
* ``getattr(obj, "<name>", default)`` is a feature check (a missing attribute gives the default);
  ``getattr(obj, "<name>")`` without a default is checked like ``obj.<name>``;
* an import inside ``try:`` whose ``except`` catches ``ImportError`` (or ``ModuleNotFoundError``,
  ``Exception``) is not reported.

Anything that cannot be resolved statically (loop variables, return values, C-extension objects, classes
with bases from outside rclpy and the standard library) is left unchecked rather than guessed.

A failure lists each violation as ``file:line name``; the fix is a Humble API, or a feature check.
The data is regenerated with the command recorded in it; with ``RCLPY_GIT_DIR`` set to a clone of
ros2/rclpy, a test checks that the committed file is what the generator writes at the recorded commit.
"""

from __future__ import annotations

import ast
import builtins
import enum
import importlib
import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from python_source import resolve_from, runtime_statements, self_stores

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO_ROOT / "ros2_ws" / "src" / "seg_node"
API_FILE = Path(__file__).resolve().parent / "data" / "rclpy_humble_api.json"
FEATURE_CHECK_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def package_sources() -> list[Path]:
    """The package's Python modules and the launch files (the repository's and the package's)."""
    files = sorted((PACKAGE_ROOT / "seg_node").rglob("*.py"))
    for folder in (REPO_ROOT / "launch", PACKAGE_ROOT / "launch"):
        files += sorted(folder.glob("*.py"))
    return files


def module_name_of(path: Path) -> str:
    """seg_node.ros.node for .../seg_node/ros/node.py; a launch file is a top-level module of its own."""
    try:
        parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    except ValueError:
        parts = [path.stem]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# --- Humble's API --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """What an expression is known to be: kind is module, class, instance, function or method (rclpy,
    ``ref`` "rclpy.node", "rclpy.node:Node", "rclpy.node:Node.create_timer"), or lclass/linstance (a
    package class, ``ref`` "seg_node.ros.node:SegmentationNode")."""

    kind: str
    ref: str


class HumbleApi:
    def __init__(self, document: dict) -> None:
        self.document = document
        self.modules: dict[str, dict] = document["modules"]

    @classmethod
    @cache
    def load(cls) -> HumbleApi:
        return cls(json.loads(API_FILE.read_text()))

    def value_of(self, ref: str) -> Value | None:
        if ":" not in ref:
            return Value("module", ref) if ref in self.modules else None
        module, name = ref.split(":", 1)
        data = self.modules.get(module)
        if data is None:
            return None
        if name in data["classes"]:
            return Value("class", ref)
        if name in data["functions"]:
            return Value("function", ref)
        return None

    def module_attribute(self, module: str, name: str) -> tuple[bool, Value | None]:
        """(present in Humble, what it is when known)."""
        data = self.modules[module]
        if name in data["names"]:
            if name in data["refs"]:
                return True, self.value_of(data["refs"][name])
            return True, self.value_of(f"{module}:{name}")
        if f"{module}.{name}" in self.modules:  # a submodule: an attribute of its package once imported
            return True, Value("module", f"{module}.{name}")
        return False, None

    def class_data(self, ref: str) -> dict:
        module, name = ref.split(":", 1)
        return self.modules[module]["classes"][name]

    def class_attribute(self, ref: str, name: str, of_class: bool) -> tuple[bool | None, Value | None]:
        """(True: Humble has it, False: it does not, None: cannot tell), and what it is when known."""
        data = self.class_data(ref)
        if name in data["all_members"]:
            for owner in data["mro"]:
                nested = f"{owner}.{name}"
                if nested.split(":", 1)[1] in self.modules[owner.split(":", 1)[0]]["classes"]:
                    return True, Value("class", nested)
                method = self.class_data(owner)["methods"].get(name)
                if method is not None and method["property"] and not of_class:  # node.context: a Context
                    returns = method["returns"]
                    return True, Value("instance", returns) if returns else None
                if method is not None:
                    return True, Value("method", f"{owner}.{name}")
                if name in self.class_data(owner)["members"]:
                    return True, None
            return True, None
        if name.startswith("__") and name.endswith("__"):
            return True, None
        external = external_attributes(tuple(data["external_bases"]), of_class)
        if external is None:
            return None, None
        return name in external, None

    def returned(self, callee: Value | None) -> Value | None:
        """What calling ``callee`` (a function or a method) returns, when Humble annotates it with a class."""
        signature = self.signature(callee) if callee is not None and callee.kind != "class" else None
        returns = signature.get("returns") if signature else None
        return Value("instance", returns) if returns else None

    def signature(self, value: Value) -> dict | None:
        """The parameters of a function, a method or a class's constructor; None when unknown."""
        if value.kind == "function":
            module, name = value.ref.split(":", 1)
            return self.modules[module]["functions"][name]
        if value.kind == "method":
            class_ref, _, method = value.ref.rpartition(".")
            return self.class_data(class_ref)["methods"].get(method)
        if value.kind == "class":
            for owner in self.class_data(value.ref)["mro"]:
                init = self.class_data(owner)["methods"].get("__init__")
                if init is not None:
                    return init
        return None


@cache
def external_attributes(bases: tuple[str, ...], of_class: bool) -> frozenset[str] | None:
    """The attributes that standard-library bases (enum.IntEnum, builtins.Exception) give; None if any base
    is not one we can look at."""
    names: set[str] = set(dir(type)) if of_class else set()
    for base in bases:
        if base == "typing.NamedTuple":
            names |= set(dir(tuple)) | {"_fields", "_field_defaults", "_asdict", "_replace", "_make"}
            continue
        module, _, attribute = base.rpartition(".")
        try:
            cls = getattr(builtins if module == "builtins" else importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError):
            return None
        if not isinstance(cls, type):
            return None
        names |= set(dir(cls))
        if issubclass(cls, enum.Enum):
            names |= {"name", "value", "_name_", "_value_"}
    return frozenset(names)


# --- the package's own classes ------------------------------------------------------------------------


@dataclass
class LocalClass:
    ref: str
    bases: list[Value | None]  # None: a base from outside the package and rclpy
    members: set[str]
    attr_types: dict[str, Value | None] = field(default_factory=dict)  # of a known class; None: ambiguous
    # lists of a known class: self.x = [...], self.x += [...], self.x.append(...), self.x.extend([...])
    element_types: dict[str, Value | None] = field(default_factory=dict)


@dataclass
class LocalModule:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    # name -> ("import", "rclpy.node:Node" / "seg_node.engine:X"), ("class", name) or ("other", name)
    bindings: dict[str, tuple[str, str]] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)


def annotation_expr(node: ast.expr | None) -> ast.expr | None:
    """The class in an annotation: ``X``, ``X | None``, ``Optional[X]``, ``'X'``; None otherwise."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return annotation_expr(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [s for s in (node.left, node.right) if not (isinstance(s, ast.Constant) and s.value is None)]
        return annotation_expr(sides[0]) if len(sides) == 1 else None
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("Optional", "typing.Optional"):
        return annotation_expr(node.slice)
    if isinstance(node, (ast.Name, ast.Attribute)):
        return node
    return None


class Package:
    """The package's modules, their classes, and what their module-level names stand for."""

    def __init__(self, api: HumbleApi, modules: list[LocalModule]) -> None:
        self.api = api
        self.modules = {m.name: m for m in modules}
        self.local_classes: dict[str, LocalClass] = {}
        for module in modules:
            self._bind_module(module)
        for module in modules:
            for name, node in module.classes.items():
                self._class_info(module, name, node)
        for module in modules:  # every class known: attributes typed by what their methods return
            for name, node in module.classes.items():
                self._attribute_types(module, self.local_classes[f"{module.name}:{name}"], node)

    def _bind_module(self, module: LocalModule) -> None:
        for statement in runtime_statements(module.tree.body):
            if isinstance(statement, ast.Import):
                for alias in statement.names:
                    if alias.asname:
                        module.bindings[alias.asname] = ("import", alias.name)
                    else:  # import a.b binds a
                        first = alias.name.split(".")[0]
                        module.bindings[first] = ("import", first)
            elif isinstance(statement, ast.ImportFrom):
                source = resolve_from(module.name, module.is_package, statement)
                for alias in statement.names:
                    module.bindings[alias.asname or alias.name] = ("import", f"{source}:{alias.name}")
            elif isinstance(statement, ast.ClassDef):
                module.classes[statement.name] = statement
                module.bindings[statement.name] = ("class", statement.name)
            else:
                for name in bound_names(statement):
                    module.bindings[name] = ("other", name)

    def follow(self, ref: str, seen: frozenset = frozenset()) -> Value | None:
        """An import reference ("rclpy.node:Node", "seg_node.engine:FramePipeline", "rclpy") as a Value."""
        if ref in seen:
            return None
        seen = seen | {ref}
        if ref == "rclpy" or ref.startswith(("rclpy.", "rclpy:")):
            if ":" not in ref:
                return self.api.value_of(ref)
            module, name = ref.split(":", 1)
            if module not in self.api.modules:
                return None
            return self.api.module_attribute(module, name)[1]
        if ":" not in ref:
            return None
        module, name = ref.split(":", 1)
        local = self.modules.get(module)
        if local is None:
            return None
        return self.module_binding(local, name, seen)

    def module_binding(self, module: LocalModule, name: str, seen: frozenset = frozenset()) -> Value | None:
        binding = module.bindings.get(name)
        if binding is None:
            return None
        kind, target = binding
        if kind == "import":
            return self.follow(target, seen)
        if kind == "class":
            return Value("lclass", f"{module.name}:{target}")
        return None

    def _class_info(self, module: LocalModule, name: str, node: ast.ClassDef) -> None:
        ref = f"{module.name}:{name}"
        bases: list[Value | None] = []
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id == "object":
                continue
            value = self.expression_value(module, base)
            bases.append(value if value is not None and value.kind in ("class", "lclass") else None)
        members: set[str] = set()
        for statement in node.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                members.add(statement.name)
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                members.add(statement.target.id)
            elif isinstance(statement, (ast.Assign, ast.AugAssign)):
                for target in statement.targets if isinstance(statement, ast.Assign) else [statement.target]:
                    members.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        for method in node.body:
            if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                members.update(attribute.attr for attribute, _, _ in self_stores(method))
        self.local_classes[ref] = LocalClass(ref, bases, members)

    def _attribute_types(self, module: LocalModule, info: LocalClass, node: ast.ClassDef) -> None:
        """The types of the class's annotated fields and ``self.x`` attributes, and of its lists' elements."""
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                typed = self.instance_of(module, annotation_expr(statement.annotation))
                merge_type(info.attr_types, statement.target.id, typed)
        for method in node.body:
            if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for attribute, statement, target in self_stores(method):
                typed = None
                if isinstance(statement, ast.AnnAssign) and target is attribute:
                    typed = self.instance_of(module, annotation_expr(statement.annotation))
                elif isinstance(statement, ast.Assign) and target is attribute:
                    typed = self.method_expression(module, info.ref, statement.value)
                merge_type(info.attr_types, attribute.attr, typed)
            for name, element in list_elements(method):
                merge_type(info.element_types, name, self.method_expression(module, info.ref, element))

    def method_expression(self, module: LocalModule, ref: str, node: ast.expr) -> Value | None:
        """An instance of a known class made in a method of package class ``ref``: ``C(...)``, or a call of
        one of its rclpy methods that Humble annotates with a class (``self.create_subscription(...)``)."""
        made = self.constructed(module, node)
        if made is not None or not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            return made
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "self"):
            return None
        if self.local_member(ref, node.func.attr)[0]:  # the package's own method: not followed
            return None
        for rclpy_class in self.rclpy_lineage(ref)[0]:
            present, value = self.api.class_attribute(rclpy_class, node.func.attr, of_class=False)
            if present:
                return self.api.returned(value)
        return None

    def expression_value(self, module: LocalModule, node: ast.expr) -> Value | None:
        """A module-level expression (a base class, an annotation): Name or dotted Attribute."""
        if isinstance(node, ast.Name):
            return self.module_binding(module, node.id)
        if isinstance(node, ast.Attribute):
            base = self.expression_value(module, node.value)
            if base is not None and base.kind == "module":
                return self.api.module_attribute(base.ref, node.attr)[1]
            if base is not None and base.kind == "class":
                return self.api.class_attribute(base.ref, node.attr, of_class=True)[1]
        return None

    def instance_of(self, module: LocalModule, annotation: ast.expr | None) -> Value | None:
        if annotation is None:
            return None
        value = self.expression_value(module, annotation)
        if value is not None and value.kind == "class":
            return Value("instance", value.ref)
        if value is not None and value.kind == "lclass":
            return Value("linstance", value.ref)
        return None

    def constructed(self, module: LocalModule, node: ast.expr) -> Value | None:
        """``C(...)`` for a known class C: an instance of it."""
        if isinstance(node, ast.Call):
            return self.instance_of(module, node.func)
        return None

    def rclpy_lineage(self, ref: str, seen: frozenset = frozenset()) -> tuple[list[str], bool]:
        """The rclpy classes a package class derives from, and whether all its bases are known."""
        if ref in seen:
            return [], False
        info = self.local_classes.get(ref)
        if info is None:
            return [], False
        found: list[str] = []
        closed = True
        for base in info.bases:
            if base is None:
                closed = False
            elif base.kind == "class":
                found.append(base.ref)
            else:
                more, more_closed = self.rclpy_lineage(base.ref, seen | {ref})
                found += more
                closed = closed and more_closed
        return found, closed

    def local_member(self, ref: str, name: str, seen: frozenset = frozenset()) -> tuple[bool, Value | None]:
        """Whether the package class (or a package base) defines ``name``, and its type when known."""
        if ref in seen or ref not in self.local_classes:
            return False, None
        info = self.local_classes[ref]
        if name in info.members:
            return True, info.attr_types.get(name)
        for base in info.bases:
            if base is not None and base.kind == "lclass":
                found, typed = self.local_member(base.ref, name, seen | {ref})
                if found:
                    return True, typed
        return False, None


    def list_element(self, ref: str, name: str, seen: frozenset = frozenset()) -> Value | None:
        """The element type of the package class's list attribute ``name`` (or a package base's)."""
        if ref in seen or ref not in self.local_classes:
            return None
        info = self.local_classes[ref]
        if name in info.element_types:
            return info.element_types[name]
        for base in info.bases:
            if base is not None and base.kind == "lclass":
                found = self.list_element(base.ref, name, seen | {ref})
                if found is not None:
                    return found
        return None


def list_elements(method: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[tuple[str, ast.expr]]:
    """The elements a method puts into lists held by its first argument: (attribute name, element) for
    ``self.x = [e, ...]``, ``self.x += [e, ...]``, ``self.x.append(e)`` and ``self.x.extend([e, ...])``."""
    args = [*method.args.posonlyargs, *method.args.args]
    if not args:
        return
    first = args[0].arg

    def attribute_of_first(node: ast.expr) -> str | None:
        is_ours = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == first
        return node.attr if is_ours else None

    for node in ast.walk(method):
        name, elements = None, []
        if isinstance(node, (ast.Assign, ast.AugAssign)) and isinstance(node.value, (ast.List, ast.Tuple)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            name = attribute_of_first(targets[0]) if len(targets) == 1 else None
            elements = node.value.elts
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and len(node.args) == 1:
            name = attribute_of_first(node.func.value)
            if node.func.attr == "append":
                elements = node.args
            elif node.func.attr == "extend" and isinstance(node.args[0], (ast.List, ast.Tuple)):
                elements = node.args[0].elts
            else:
                name = None
        if name is not None:
            for element in elements:
                yield name, element


def merge_type(types: dict[str, Value | None], name: str, typed: Value | None) -> None:
    if name in types and types[name] != typed:
        types[name] = None
    else:
        types[name] = typed


def bound_names(node: ast.AST) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


# --- the checker ----------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    name: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name}" + (f"  ({self.detail})" if self.detail else "")


def hasattr_names(test: ast.expr) -> tuple[set[str], set[str]]:
    """Names a test proves present when true, and when false: ``hasattr(o, "n")``, ``not ...``, ``and``."""
    if (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Name)
        and test.func.id == "hasattr"
        and len(test.args) == 2
        and isinstance(test.args[1], ast.Constant)
        and isinstance(test.args[1].value, str)
    ):
        return {test.args[1].value}, set()
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        when_true, when_false = hasattr_names(test.operand)
        return when_false, when_true
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        names: set[str] = set()
        for value in test.values:
            names |= hasattr_names(value)[0]
        return names, set()
    return set(), set()


def display_name(value: Value) -> str:
    return value.ref.replace(":", ".")


class Checker(ast.NodeVisitor):
    """Visits one package module and collects its uses of rclpy API that Humble lacks."""

    def __init__(self, package: Package, module: LocalModule, display_path: str) -> None:
        self.package = package
        self.api = package.api
        self.module = module
        self.path = display_path
        self.violations: list[Violation] = []
        self.scopes: list[dict[str, Value | None]] = []  # function scopes, innermost last
        self.frames: list[tuple[str, str]] = []  # ("class", ref) / ("function", the method's class or "")
        self.guarded: list[set[str]] = []  # attribute names a feature check proves present
        self.import_guard = 0

    def report(self, node: ast.AST, name: str, detail: str = "") -> None:
        self.violations.append(Violation(self.path, node.lineno, name, detail))

    def is_guarded(self, name: str) -> bool:
        return any(name in names for names in self.guarded)

    # --- what an expression is
    def lookup(self, name: str) -> Value | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return self.package.module_binding(self.module, name)

    def value(self, node: ast.expr) -> Value | None:
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Attribute):
            base = self.value(node.value)
            return self.attribute(base, node.attr)[1] if base is not None else None
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "super" and not node.args:
                owner = self.frames[-1][1] if self.frames and self.frames[-1][0] == "function" else ""
                return Value("linstance", owner) if owner else None
            func = self.value(node.func)
            if func is not None and func.kind == "class":
                return Value("instance", func.ref)
            if func is not None and func.kind == "lclass":
                return Value("linstance", func.ref)
            if func is not None and func.kind in ("function", "method"):
                return self.api.returned(func)
        return None

    def element(self, iterable: ast.expr) -> Value | None:
        """What iterating ``iterable`` gives, when known: the elements of a package class's typed list."""
        if isinstance(iterable, ast.Attribute):
            base = self.value(iterable.value)
            if base is not None and base.kind == "linstance":
                return self.package.list_element(base.ref, iterable.attr)
        return None

    def attribute(self, base: Value, name: str) -> tuple[bool | None, Value | None, str]:
        """(True: Humble has it, False: it does not, None: cannot tell; what it is; the name to report)."""
        if base.kind == "module":
            present, value = self.api.module_attribute(base.ref, name)
            return present, value, f"{base.ref}.{name}"
        if base.kind in ("class", "instance"):
            present, value = self.api.class_attribute(base.ref, name, of_class=base.kind == "class")
            if value is not None and value.kind == "method" and base.kind == "class":
                value = None  # Node.create_timer(node, ...): not worth following
            return present, value, f"{display_name(base)}.{name}"
        if base.kind in ("lclass", "linstance"):
            of_class = base.kind == "lclass"
            found, typed = self.package.local_member(base.ref, name)
            if found:
                return True, None if of_class else typed, name
            lineage, closed = self.package.rclpy_lineage(base.ref)
            if not lineage:  # not an rclpy class: its attributes are not this test's business
                return None, None, name
            unknown = False
            for ref in lineage:
                present, value = self.api.class_attribute(ref, name, of_class=of_class)
                if present:
                    if value is not None and value.kind == "method" and of_class:
                        value = None
                    return True, value, f"{display_name(Value('class', ref))}.{name}"
                unknown = unknown or present is None
            if unknown or not closed:
                return None, None, name
            return False, None, f"{display_name(Value('class', lineage[0]))}.{name}"
        return None, None, name

    # --- imports
    def visit_Try(self, node: ast.Try) -> None:
        catches_import = any(
            handler.type is None
            or any(isinstance(n, ast.Name) and n.id in FEATURE_CHECK_EXCEPTIONS for n in ast.walk(handler.type))
            for handler in node.handlers
        )
        self.import_guard += catches_import
        for statement in node.body:
            self.visit(statement)
        self.import_guard -= catches_import
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] != "rclpy" or self.import_guard:
                continue
            for end in range(2, len(parts) + 1):
                module = ".".join(parts[:end])
                if module not in self.api.modules:
                    self.report(node, module, f"import {alias.name}: no such module in Humble's rclpy")
                    break

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = resolve_from(self.module.name, self.module.is_package, node)
        if (source != "rclpy" and not source.startswith("rclpy.")) or self.import_guard:
            return
        if source not in self.api.modules:
            self.report(node, source, f"from {source} import ...: no such module in Humble's rclpy")
            return
        for alias in node.names:
            if alias.name != "*" and not self.api.module_attribute(source, alias.name)[0]:
                self.report(node, f"{source}.{alias.name}", f"from {source} import {alias.name}: not in Humble")

    # --- attribute uses and calls
    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.generic_visit(node)
        if not isinstance(node.ctx, ast.Load) or self.is_guarded(node.attr):
            return
        base = self.value(node.value)
        if base is None:
            return
        present, _, name = self.attribute(base, node.attr)
        if present is False:
            where = f" ({base.ref.split(':', 1)[1]} derives from it)" if base.kind in ("lclass", "linstance") else ""
            self.report(node, name, f"{ast.unparse(node)}: not in Humble's rclpy{where}")

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id == "getattr"
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and not self.is_guarded(node.args[1].value)
        ):  # getattr(obj, "name") without a default is obj.name; with one it is a feature check
            base = self.value(node.args[0])
            if base is not None:
                present, _, name = self.attribute(base, node.args[1].value)
                if present is False:
                    self.report(node, name, f"{ast.unparse(node)}: not in Humble's rclpy")
        if isinstance(func, ast.Attribute) and self.is_guarded(func.attr):
            return
        callee = self.value(func)
        if callee is None or callee.kind not in ("function", "method", "class"):
            return
        signature = self.api.signature(callee)
        if signature is None or signature["varkw"]:
            return
        for keyword in node.keywords:
            if keyword.arg is not None and keyword.arg not in signature["params"]:
                self.report(
                    node, f"{display_name(callee)}({keyword.arg}=)", "no such keyword argument in Humble's rclpy"
                )

    # --- feature checks
    def visit_If(self, node: ast.If | ast.IfExp) -> None:
        when_true, when_false = hasattr_names(node.test)
        self.visit(node.test)
        self.guarded.append(when_true)
        for part in node.body if isinstance(node.body, list) else [node.body]:
            self.visit(part)
        self.guarded[-1] = when_false
        for part in node.orelse if isinstance(node.orelse, list) else [node.orelse]:
            self.visit(part)
        self.guarded.pop()

    visit_IfExp = visit_If

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        if not isinstance(node.op, ast.And):
            self.generic_visit(node)
            return
        proven: set[str] = set()
        self.guarded.append(proven)
        for value in node.values:
            self.visit(value)
            proven |= hasattr_names(value)[0]
        self.guarded.pop()

    # --- scopes: comprehensions, classes and functions
    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> None:
        """The comprehension's own names, each typed by what its iterable gives when that is known."""
        scope: dict[str, Value | None] = {}
        self.scopes.append(scope)
        for generator in node.generators:
            self.visit(generator.iter)  # evaluated with the names of the generators before it
            typed = self.element(generator.iter) if isinstance(generator.target, ast.Name) else None
            for name in bound_names(ast.Assign(targets=[generator.target])):
                scope[name] = typed
            for condition in generator.ifs:
                self.visit(condition)
        for part in (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,):
            self.visit(part)
        self.scopes.pop()

    visit_SetComp = visit_GeneratorExp = visit_DictComp = visit_ListComp

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for part in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(part)
        ref = f"{self.module.name}:{node.name}"
        self.frames.append(("class", ref if ref in self.package.local_classes else ""))
        for statement in node.body:
            self.visit(statement)
        self.frames.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        decorators = getattr(node, "decorator_list", [])
        args = node.args
        for part in (*decorators, *args.defaults, *[d for d in args.kw_defaults if d is not None]):
            self.visit(part)
        if not isinstance(node, ast.Lambda):
            for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
                if arg.annotation is not None:
                    self.visit(arg.annotation)
        owner = ""
        if self.frames and self.frames[-1][0] == "class":
            if not isinstance(node, ast.Lambda) and not any(
                ast.unparse(d) in ("staticmethod", "classmethod") for d in decorators
            ):
                owner = self.frames[-1][1]
        elif self.frames:
            owner = self.frames[-1][1]
        scope: dict[str, Value | None] = {}
        positional = [*args.posonlyargs, *args.args]
        for index, arg in enumerate([*positional, *args.kwonlyargs]):
            if index == 0 and owner and self.frames[-1][0] == "class":
                scope[arg.arg] = Value("linstance", owner)
            elif isinstance(node, ast.Lambda):
                scope[arg.arg] = None
            else:
                scope[arg.arg] = self.package.instance_of(self.module, annotation_expr(arg.annotation))
        for extra in (args.vararg, args.kwarg):
            if extra is not None:
                scope[extra.arg] = None
        body = node.body if isinstance(node.body, list) else [node.body]
        parameters = set(scope)
        self.scopes.append(scope)  # the parameters are known while the local names are typed
        self.frames.append(("function", owner))
        for name, typed in self.local_bindings(body).items():
            scope[name] = typed if name not in parameters else None
        for statement in body:
            self.visit(statement)
        self.frames.pop()
        self.scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def local_bindings(self, body: list[ast.stmt]) -> dict[str, Value | None]:
        """The names a function binds, each with the class it is always constructed from (None: unknown).
        ``x = None`` does not count against a type; any other binding that is not ``x = C(...)``,
        ``x = <an expression of a known class>`` or ``x: C`` makes it unknown."""
        types: dict[str, Value | None] = {}
        typed_targets: set[int] = set()
        shadowing = {
            n.id for n in walk_scope(body) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))
        }
        for name in shadowing - self.scopes[-1].keys():  # a local name hides the module's while typing
            self.scopes[-1][name] = None
        for node in walk_scope(body):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                typed_targets.add(id(node.targets[0]))
                if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                    merge_type(types, node.targets[0].id, self.constructed(node.value))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                typed_targets.add(id(node.target))
                typed = self.package.instance_of(self.module, annotation_expr(node.annotation))
                merge_type(types, node.target.id, typed)
            elif isinstance(node, (ast.For, ast.AsyncFor)) and isinstance(node.target, ast.Name):
                typed_targets.add(id(node.target))
                merge_type(types, node.target.id, self.element(node.iter))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    merge_type(types, name, self.package.follow(alias.name if alias.asname else name))
            elif isinstance(node, ast.ImportFrom):
                source = resolve_from(self.module.name, self.module.is_package, node)
                for alias in node.names:
                    merge_type(types, alias.asname or alias.name, self.package.follow(f"{source}:{alias.name}"))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                merge_type(types, node.name, None)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                if id(node) not in typed_targets:
                    merge_type(types, node.id, None)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                merge_type(types, node.name, None)
        return types

    def constructed(self, node: ast.expr) -> Value | None:
        """An instance of a known class: ``C(...)``, or an attribute whose type is known (``tag.outputs``)."""
        value = self.value(node)
        return value if value is not None and value.kind in ("instance", "linstance") else None


def walk_scope(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes of a function body in order, yielding nested functions, classes and lambdas but not
    descending into them (their names are their own)."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def check_sources(sources: dict[str, str], api: HumbleApi | None = None) -> list[Violation]:
    """Check modules given as {module name or path: source}; a path ending in __init__.py is a package."""
    api = api or HumbleApi.load()
    modules = []
    for key, text in sources.items():
        path = Path(key)
        if path.suffix == ".py":
            name, shown = module_name_of(path), str(path.relative_to(REPO_ROOT)) if path.is_absolute() else key
        else:
            name, shown = key, key
        tree = ast.parse(text, filename=shown)
        modules.append(LocalModule(name, Path(shown), tree, path.name == "__init__.py"))
    package = Package(api, modules)
    violations: list[Violation] = []
    for module in modules:
        checker = Checker(package, module, str(module.path))
        checker.visit(module.tree)
        violations += checker.violations
    return sorted(set(violations))


def check_package() -> list[Violation]:
    return check_sources({str(path): path.read_text() for path in package_sources()})


def failure_message(violations: list[Violation]) -> str:
    lines = [
        f"{len(violations)} use(s) of rclpy API that ROS 2 Humble lacks (Humble's API: tests/data/{API_FILE.name}).",
        "Use a Humble API, or put the newer one behind a feature check (if hasattr(obj, 'name'): ...,",
        "or getattr(obj, 'name', None)); each as file:line name:",
    ]
    return "\n".join([*lines, *(f"  {v}" for v in violations)])


# --- tests ----------------------------------------------------------------------------------------------


def test_the_data_describes_humble() -> None:
    api = HumbleApi.load()
    assert api.document["ref"] == "humble" and api.document["version"].startswith("3.3.")
    assert len(api.document["commit"]) == 40 and "make_rclpy_api.py" in api.document["generated_by"]
    for module in (
        "rclpy",
        "rclpy.node",
        "rclpy.lifecycle",
        "rclpy.qos",
        "rclpy.executors",
        "rclpy.parameter",
        "rclpy.exceptions",
        "rclpy.duration",
        "rclpy.time",
        "rclpy.callback_groups",
        "rclpy.logging",
    ):
        assert module in api.modules, module
    node = api.class_data("rclpy.node:Node")
    assert "add_on_set_parameters_callback" in node["all_members"]
    assert "add_post_set_parameters_callback" not in node["all_members"]  # Jazzy's
    lifecycle = api.class_data("rclpy.lifecycle.node:LifecycleNode")
    assert "rclpy.node:Node" in lifecycle["mro"] and "create_publisher" in lifecycle["all_members"]
    assert api.modules["rclpy.lifecycle"]["refs"]["Node"] == "rclpy.lifecycle.node:LifecycleNode"


NODE_SNIPPET = """
import rclpy
from rclpy.node import Node


class Late(Node):
    def __init__(self):
        super().__init__("late")
        self.add_on_set_parameters_callback(self._check)
        self.add_post_set_parameters_callback(self._apply)

    def _check(self, parameters):
        return parameters

    def _apply(self, parameters):
        return parameters
"""

GUARDED_SNIPPET = """
from rclpy.node import Node


class Late(Node):
    def __init__(self):
        super().__init__("late")
        if hasattr(self, "add_post_set_parameters_callback"):  # Iron and newer
            self.add_post_set_parameters_callback(self._apply)
        else:
            self.add_on_set_parameters_callback(self._apply)
        register = getattr(self, "add_post_set_parameters_callback", None)
        if register is not None:
            register(self._apply)

    def _apply(self, parameters):
        return parameters
"""


def test_a_jazzy_only_method_is_reported() -> None:
    violations = check_sources({"snippet": NODE_SNIPPET})
    assert [(v.line, v.name) for v in violations] == [(10, "rclpy.node.Node.add_post_set_parameters_callback")]
    assert str(violations[0]).startswith("snippet:10 rclpy.node.Node.add_post_set_parameters_callback")


def test_a_jazzy_only_method_behind_hasattr_is_not_reported() -> None:
    assert check_sources({"snippet": GUARDED_SNIPPET}) == []


def test_the_else_of_hasattr_is_not_a_feature_check() -> None:
    source = GUARDED_SNIPPET.replace('if hasattr(self, "add_post', 'if not hasattr(self, "add_post')
    assert [v.line for v in check_sources({"snippet": source})] == [9]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from rclpy.type_hash import TypeHash", "rclpy.type_hash"),  # Jazzy's module
        ("import rclpy.event_handler", "rclpy.event_handler"),  # Iron renamed qos_event to event_handler
        ("from rclpy.qos import QoSProfile, NotAQoSName", "rclpy.qos.NotAQoSName"),
        ("import rclpy\nrclpy.spin_not_at_all(None)", "rclpy.spin_not_at_all"),
        ("import rclpy\nrclpy.logging.get_logger('x').not_a_method()", None),  # a return value: not followed
        (
            "from rclpy.parameter import Parameter\nParameter.Type.INTEGER_ARRAY\nParameter.Type.NO_SUCH_TYPE",
            "rclpy.parameter.Parameter.Type.NO_SUCH_TYPE",
        ),
        (
            "from rclpy.node import Node\ndef f(node: Node | None):\n    node.get_name()\n    node.no_such_method()",
            "rclpy.node.Node.no_such_method",
        ),
        (
            "from rclpy.executors import SingleThreadedExecutor\ndef f():\n    x = SingleThreadedExecutor()\n"
            "    x.spin()\n    x.spin_forever()",
            "rclpy.executors.SingleThreadedExecutor.spin_forever",
        ),
        ("import rclpy\nrclpy.create_node('n', no_such_option=True)", "rclpy.create_node(no_such_option=)"),
        (
            "from rclpy.node import Node\nNode('n').create_subscription(int, 't', print, 1, raw=True, nope=1)",
            "rclpy.node.Node.create_subscription(nope=)",
        ),
        (
            "from rclpy.node import Node\ndef f(node: Node):\n    getattr(node, 'no_such_method')()",
            "rclpy.node.Node.no_such_method",
        ),
        ("from rclpy.node import Node\ndef f(node: Node):\n    getattr(node, 'no_such_method', None)", None),
        ("try:\n    from rclpy.type_hash import TypeHash\nexcept ImportError:\n    TypeHash = None", None),
        (
            "from rclpy.qos import ReliabilityPolicy\nReliabilityPolicy.RELIABLE.value\nReliabilityPolicy.BEST_EFFORT",
            None,
        ),
        (
            "from rclpy.lifecycle import LifecycleNode\nclass N(LifecycleNode):\n"
            "    def f(self):\n        self.create_timer(1.0, self.f)\n        self.trigger_configure()\n"
            "        self.not_in_humble()",
            "rclpy.lifecycle.node.LifecycleNode.not_in_humble",
        ),
        # what rclpy calls return, typed by Humble's return annotations (#43: the recorder's
        # Subscription.get_publisher_count, which rclpy has only since Iron)
        (
            "from rclpy.node import Node\ndef f(node: Node):\n    s = node.create_subscription(int, 't', print, 1)\n"
            "    s.topic_name\n    return s.get_publisher_count()",
            "rclpy.subscription.Subscription.get_publisher_count",
        ),
        (
            "from rclpy.node import Node\ndef f(node: Node):\n"
            "    return node.create_publisher(int, 't', 1).get_subscription_count()",
            None,
        ),
        (
            "from rclpy.node import Node\nclass R(Node):\n    def __init__(self):\n        super().__init__('r')\n"
            "        self.subs = []\n        self.subs.append(self.create_subscription(int, 't', print, 1))\n"
            "    def ready(self):\n        return all(s.get_publisher_count() for s in self.subs)",
            "rclpy.subscription.Subscription.get_publisher_count",
        ),
        (
            "from rclpy.node import Node\nclass R(Node):\n    def __init__(self):\n        super().__init__('r')\n"
            "        self.timers_ = [self.create_timer(1.0, print)]\n    def f(self):\n"
            "        for timer in self.timers_:\n            timer.cancel()\n            timer.no_such_method()",
            "rclpy.timer.Timer.no_such_method",
        ),
        (
            "from rclpy.node import Node\ndef f(node: Node, request):\n"
            "    future = node.create_client(int, 's').call_async(request)\n"
            "    future.add_done_callback(print)\n    future.no_such_method()",
            "rclpy.task.Future.no_such_method",
        ),
        (
            "from rclpy.node import Node\ndef f(node: Node):\n    node.context.ok()\n    node.context.no_such()\n"
            "    node.get_clock().now().nanoseconds\n    node.get_clock().no_such_clock()",
            ["rclpy.context.Context.no_such", "rclpy.clock.Clock.no_such_clock"],
        ),
        (
            "from rclpy.node import Node\ndef f(node: Node):\n    s = node.create_service(int, 's', print)\n"
            "    if hasattr(s, 'newer'):\n        s.newer()",
            None,
        ),
    ],
)
def test_the_checker_on_small_sources(source: str, expected: str | list[str] | None) -> None:
    names = [v.name for v in check_sources({"snippet": source})]
    assert names == ([expected] if isinstance(expected, str) else expected or []), names


def test_package_local_bases_and_attributes_count_as_defined() -> None:
    base = "from rclpy.node import Node\nclass Base(Node):\n    def helper(self):\n        self.ready = True\n"
    child = (
        "from .base import Base\nclass Child(Base):\n    def f(self):\n        self.helper()\n"
        "        return self.ready, self.get_logger(), self.missing()\n"
    )
    violations = check_sources({"pkg.base": base, "pkg.child": child})
    assert [(v.path, v.line, v.name) for v in violations] == [("pkg.child", 5, "rclpy.node.Node.missing")]


@pytest.mark.skipif(not os.environ.get("RCLPY_GIT_DIR"), reason="set RCLPY_GIT_DIR to a clone of ros2/rclpy")
def test_the_data_is_what_the_generator_writes(tmp_path: Path) -> None:
    """The committed data equals a fresh run of the generator at the recorded commit (needs a clone)."""
    spec = importlib.util.spec_from_file_location("make_rclpy_api", API_FILE.parent / "make_rclpy_api.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = HumbleApi.load().document
    out = tmp_path / "api.json"
    generator.main([os.environ["RCLPY_GIT_DIR"], "--ref", committed["commit"], "--out", str(out)])
    fresh = json.loads(out.read_text())
    assert (fresh["commit"], fresh["modules"]) == (committed["commit"], committed["modules"])


def test_the_package_uses_only_humble_rclpy_api() -> None:
    """The node and its tools, as they are: no rclpy name outside Humble's API unless behind a feature check."""
    sources = package_sources()
    assert any("rclpy" in path.read_text() for path in sources), "no rclpy user found: has the package moved?"
    violations = check_package()
    assert not violations, failure_message(violations)
