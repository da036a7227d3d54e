"""The shape of the project: import direction between packages and the graphql/ folder."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_top_packages(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("ledger", {"settlement", "coalition"}), ("settlement", {"coalition"})],
)
def test_import_direction(package: str, forbidden: set[str]) -> None:
    imported = _imported_top_packages(package)
    offenders = {name: sorted(imported[name]) for name in forbidden if name in imported}
    assert offenders == {}, f"{package} must not import {offenders}"


def test_the_import_check_sees_imports() -> None:
    # Guard against a checker that finds nothing: ledger does import its own modules.
    assert "ledger" in _imported_top_packages("ledger")


def test_ledger_speaks_no_loyalty() -> None:
    words = re.compile(r"\b(members?|partners?|loyalty|redeem\w*|redemptions?|earn\w*)\b")
    for path in (ROOT / "ledger").rglob("*.py"):
        used = words.findall(path.read_text().lower())
        assert not used, f"{path.name} says {used}: loyalty words belong in coalition/"


def test_graphql_folder_has_no_python_package() -> None:
    assert not (ROOT / "graphql" / "__init__.py").exists(), "it would shadow graphql-core"
    assert not list((ROOT / "graphql").rglob("*.py"))


def test_import_graphql_is_graphql_core() -> None:
    import graphql

    assert hasattr(graphql, "graphql_sync"), graphql.__file__
    assert "site-packages" in str(graphql.__file__)


ENTRY_POINT_PACKAGES = ("coalition.cli", "coalition.api", "coalition.web")


def _imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_use_cases_import_no_entry_point() -> None:
    """coalition/*.py are the use cases and infrastructure; the CLI, the API and the pages
    sit on top of them in folders of their own, never the other way round."""
    offenders = {
        path.name: sorted(
            n for n in _imports_of(path) if any(_is_under(n, e) for e in ENTRY_POINT_PACKAGES)
        )
        for path in (ROOT / "coalition").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_entry_points_live_in_their_folders() -> None:
    top = {path.name for path in (ROOT / "coalition").glob("*.py")}
    assert not {name for name in top if name.startswith("cli") or name == "app.py"}, top
    assert (ROOT / "coalition" / "cli" / "main.py").exists()
    assert (ROOT / "coalition" / "api" / "app.py").exists()


def test_no_cli_module_reaches_another_verb_group() -> None:
    """Each verb group is a thin call into the use cases; only main.py assembles them, and
    what they share sits in coalition/cli/_common.py. (``serve`` once lived in the
    transparency verbs, so verify imported transparency to reach a helper.)"""
    allowed = {"coalition.cli._common"}
    offenders: dict[str, list[str]] = {}
    for path in (ROOT / "coalition" / "cli").glob("*.py"):
        if path.name in ("main.py", "__main__.py"):
            continue
        reached = sorted(
            n
            for n in _imports_of(path)
            if _is_under(n, "coalition.cli")
            and n not in allowed
            and n != "coalition.cli"
            and not n.startswith("coalition.cli._common.")
        )
        if reached:
            offenders[path.name] = reached
    assert offenders == {}


def test_the_entry_point_checks_see_imports() -> None:
    # Guard against checks that find nothing: main.py does assemble the verb groups.
    assert "coalition.cli.serve" in _imports_of(ROOT / "coalition" / "cli" / "main.py")
    assert "coalition.cli._common" in _imports_of(ROOT / "coalition" / "cli" / "verify.py")
