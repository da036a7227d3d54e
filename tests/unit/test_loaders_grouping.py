"""DataLoader batches: one read per distinct set of options, every key answered."""

from __future__ import annotations

from typing import Any

from coalition.api.loaders import _per_member


def test_keys_are_read_once_per_distinct_options_and_all_answered() -> None:
    calls: list[tuple[list[str], tuple[Any, ...]]] = []

    def read(member_ids: list[str], *options: Any) -> dict[str, str]:
        calls.append((list(member_ids), options))
        return {m: f"{m}@{options}" for m in member_ids}

    keys = [("M1", 20, None), ("M2", 20, None), ("M1", 5, "partner:fuel"), ("M3", 20, None)]
    found = _per_member(keys, read)

    assert calls == [(["M1", "M2", "M3"], (20, None)), (["M1"], (5, "partner:fuel"))]
    assert {k: found[k] for k in keys} == {k: f"{k[0]}@{k[1:]}" for k in keys}
