"""``coalition verify --export``: lean by default (any --workers), --reference on demand,
the same exit code and the same words for the first failure; no database involved."""

from __future__ import annotations

from pathlib import Path

import pytest
from _lean_journal import varied_lines

from coalition.cli.main import main

LINES = varied_lines()
PAY = 9


@pytest.mark.parametrize(
    ("lines", "exit_code", "message"),
    [
        pytest.param(LINES, 0, "", id="honest"),
        pytest.param(
            [*LINES[:PAY], LINES[PAY].replace(b"-1250", b"-1251"), *LINES[PAY + 1 :]],
            1,
            "FAILED seq 9: rule:postings_must_balance failed",
            id="amount",
        ),
        pytest.param(LINES[:3] + LINES[4:], 1, "FAILED seq 3: seq failed", id="removed"),
    ],
)
def test_every_verifier_of_the_cli_says_the_same(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[bytes],
    exit_code: int,
    message: str,
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(lines))
    said = set()
    for options in (["--reference"], ["--workers", "1"], ["--workers", "2"], []):
        assert main(["verify", "--export", str(path), *options]) == exit_code, options
        out, err = capsys.readouterr()
        failure = [line for line in err.splitlines() if line.startswith("FAILED")]
        assert message in "\n".join(failure)
        said.add((out, tuple(failure)))
    assert len(said) == 1  # the same verdict, word for word


def test_workers_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(LINES))
    assert main(["verify", "--export", str(path), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
