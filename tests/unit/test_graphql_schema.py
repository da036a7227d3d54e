"""The exported SDL (graphql/schema.graphql) must be the schema the code builds, and every
operation document under graphql/operations/ must validate against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalition.api.schema import build_schema
from graphql import build_schema as build_sdl
from graphql import parse, validate

ROOT = Path(__file__).resolve().parents[2]
SDL = ROOT / "graphql" / "schema.graphql"
OPERATIONS = sorted((ROOT / "graphql" / "operations").rglob("*.graphql"))


def test_exported_sdl_matches_the_code() -> None:
    built = str(build_schema(development=True)) + "\n"
    assert SDL.read_text() == built, (
        "graphql/schema.graphql is stale: regenerate it with "
        'python -c "from coalition.api.schema import build_schema; '
        "open('graphql/schema.graphql','w').write(str(build_schema(development=True))+'\\n')\""
    )


def test_there_are_operations_for_every_role() -> None:
    roles = {path.parent.name for path in OPERATIONS}
    assert roles == {"partner", "auditor", "finance", "operator"}


@pytest.mark.parametrize("path", OPERATIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_operation_documents_validate(path: Path) -> None:
    schema = build_sdl(SDL.read_text())
    errors = validate(schema, parse(path.read_text()))
    assert errors == [], [e.message for e in errors]
