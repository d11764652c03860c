"""Reading Python source with ``ast`` without running it: shared by tests/test_humble_api.py (seg_node's
source) and tests/data/make_rclpy_api.py (rclpy's source at a git commit)."""

from __future__ import annotations

import ast
from collections.abc import Iterator


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a name or attribute chain (``Generic[T]`` -> ``Generic``); None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, ast.Subscript):  # Generic[T], ContextManager['Context']
        return dotted(node.value)
    return None


def is_type_checking(test: ast.expr) -> bool:
    return dotted(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def runtime_statements(body: list[ast.stmt], type_checking: bool = True) -> Iterator[ast.stmt]:
    """The statements of a module or class body that run at import, through if/try/with blocks (both branches
    of an if). ``type_checking=False`` leaves out the body of ``if TYPE_CHECKING:``, which never runs."""
    for statement in body:
        if isinstance(statement, ast.If):
            if type_checking or not is_type_checking(statement.test):
                yield from runtime_statements(statement.body, type_checking)
            yield from runtime_statements(statement.orelse, type_checking)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, *(handler.body for handler in statement.handlers), statement.orelse,
                          statement.finalbody):
                yield from runtime_statements(block, type_checking)
        elif isinstance(statement, ast.With):
            yield from runtime_statements(statement.body, type_checking)
        else:
            yield statement


def resolve_from(module: str, is_package: bool, statement: ast.ImportFrom) -> str:
    """The absolute module of ``from <...> import`` written in ``module`` (relative imports resolved)."""
    if not statement.level:
        return statement.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (statement.level - 1)]
    return ".".join([*base, *([statement.module] if statement.module else [])])


def self_stores(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[tuple[ast.Attribute, ast.AST, ast.expr]]:
    """Each attribute a method stores on its first argument (``self.x = ...``, ``self.x: T = ...``,
    ``self.x += ...``, ``for self.x in ...``, ``with ... as self.x``): (the attribute, its statement, the
    whole target it is part of, which is the attribute itself unless it is unpacked)."""
    args = [*function.args.posonlyargs, *function.args.args]
    if not args:
        return
    first = args[0].arg
    for node in ast.walk(function):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            targets = [node.target]
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets = [item.optional_vars for item in node.items if item.optional_vars is not None]
        for target in targets:
            for element in ast.walk(target):
                if (
                    isinstance(element, ast.Attribute)
                    and isinstance(element.value, ast.Name)
                    and element.value.id == first
                    and isinstance(element.ctx, ast.Store)
                ):
                    yield element, node, target
