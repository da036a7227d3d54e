"""Every refusal a use case can give has a member in the GraphQL union its field answers.

A refusal whose code is not a member of the field's union cannot be answered as data:
strawberry fails to resolve the union member and the client gets an internal error
instead of ``... on Refusal { code message }``. This reads the code (no I/O): from each
union-answering resolver, the coalition functions it reaches, transitively, and every
``RefusalCode.X`` they name. Codes the ledger's rejections map to (``refusal_for``) are
not followed: which of those an append can give depends on the entry's kind, and the
unions list them by hand (capture: ``OVER_CAPTURE`` …).
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path
from typing import Any

import pytest

from coalition.api import results
from coalition.outcomes import RefusalCode

ROOT = Path(__file__).resolve().parents[2]
RESOLVER_FILES = ("coalition/api/mutation.py", "coalition/api/query.py")
# Not followed: the ledger's rejection map (see the module docstring).
NOT_FOLLOWED = {("coalition.context", "refusal_for")}


class _Module:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.aliases: dict[str, str] = {}  # local name → module or module.function
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions.setdefault(node.name, node)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = alias.name


def _modules() -> dict[str, _Module]:
    found = {}
    for path in [*(ROOT / "coalition").glob("*.py"), *(ROOT / "coalition" / "api").glob("*.py")]:
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts)
        found[name] = _Module(name, path)
    return found


MODULES = _modules()


def _target(module: _Module, call: ast.Call) -> tuple[str, str] | None:
    func = call.func
    if isinstance(func, ast.Name):
        if func.id in module.functions:
            return module.name, func.id
        qualified = module.aliases.get(func.id, "")
        owner, _, name = qualified.rpartition(".")
        return (owner, name) if owner in MODULES else None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        qualified = module.aliases.get(func.value.id, "")
        if qualified in MODULES:
            return qualified, func.attr
        if func.value.id in ("co", "self") and func.attr in ("append", "append_once"):
            return "coalition.context", func.attr
    return None


def _codes_reached(start: list[tuple[str, ast.AST]]) -> set[RefusalCode]:
    codes: set[RefusalCode] = set()
    seen: set[tuple[str, str]] = set()
    todo = list(start)
    while todo:
        module_name, node = todo.pop()
        module = MODULES[module_name]
        for sub in ast.walk(node):
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Name)
                and sub.value.id in ("RefusalCode", "C")
                and sub.attr in RefusalCode.__members__
            ):
                codes.add(RefusalCode[sub.attr])
            if isinstance(sub, ast.Call):
                target = _target(module, sub)
                if target is None or target in seen or target in NOT_FOLLOWED:
                    continue
                seen.add(target)
                owner = MODULES.get(target[0])
                if owner is not None and target[1] in owner.functions:
                    todo.append((target[0], owner.functions[target[1]]))
    return codes


def _resolvers() -> list[tuple[str, str, str]]:
    """(file's module, resolver name, union name) for each field declared with a union."""
    found = []
    for rel in RESOLVER_FILES:
        module_name = rel.removesuffix(".py").replace("/", ".")
        for node in ast.walk(MODULES[module_name].tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                if not isinstance(decorator, ast.Call):
                    continue
                for keyword in decorator.keywords:
                    if keyword.arg == "graphql_type" and isinstance(keyword.value, ast.Name):
                        found.append((module_name, node.name, keyword.value.id))
    return found


def _union_codes(union_name: str) -> set[RefusalCode]:
    annotated: Any = getattr(results, union_name)
    members = typing.get_args(typing.get_args(annotated)[0])
    by_type = {cls: code for code, cls in results.REFUSALS.items()}
    return {by_type[m] for m in members if m in by_type}


RESOLVERS = _resolvers()


@pytest.mark.parametrize(("module", "resolver", "union"), RESOLVERS, ids=[r[1] for r in RESOLVERS])
def test_every_refusal_reached_is_a_member_of_the_fields_union(
    module: str, resolver: str, union: str
) -> None:
    node = MODULES[module].functions[resolver]
    reached = _codes_reached([(module, node)])
    missing = sorted(code.name for code in reached - _union_codes(union))
    assert missing == [], f"{resolver} can refuse {missing}, which {union} does not list"


def test_the_check_sees_resolvers_and_codes() -> None:
    # Guard against a check that finds nothing: earn reaches the partner and member guards.
    assert ("coalition.api.mutation", "earn", "EarnResult") in RESOLVERS
    earn_node = MODULES["coalition.api.mutation"].functions["earn"]
    reached = _codes_reached([("coalition.api.mutation", earn_node)])
    assert {RefusalCode.PARTNER_SUSPENDED, RefusalCode.UNKNOWN_MEMBER} <= reached
