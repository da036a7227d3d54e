"""The sign-in limit's and the verify job's settings come from the environment, with
defaults, and a bad value is refused with the variable's name (no silent default)."""

from __future__ import annotations

import pytest

from coalition.online_verification import VerifyPolicy
from coalition.signin_limit import SigninLimit


def test_signin_limit_defaults_and_overrides() -> None:
    assert SigninLimit.from_env({}) == SigninLimit(10, 500, 900)
    assert SigninLimit.from_env(
        {"COALITION_SIGNIN_FAILURES_PER_ADDRESS": "3", "COALITION_SIGNIN_WINDOW_SECONDS": "60"}
    ) == SigninLimit(3, 500, 60)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COALITION_SIGNIN_FAILURES_PER_ADDRESS", "0"),
        ("COALITION_SIGNIN_FAILURES_PER_ADDRESS", "ten"),
        ("COALITION_SIGNIN_FAILURES_TOTAL", "-5"),
        ("COALITION_SIGNIN_WINDOW_SECONDS", "86401"),
    ],
)
def test_a_bad_signin_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        SigninLimit.from_env({name: value})


def test_verify_policy_defaults_overrides_and_refusals() -> None:
    assert VerifyPolicy.from_env({}) == VerifyPolicy(86_400, 100_000)
    assert VerifyPolicy.from_env({"COALITION_VERIFY_ENTRIES_PER_RUN": "500"}).entries_per_run == 500
    with pytest.raises(ValueError, match="COALITION_VERIFY_FULL_SECONDS"):
        VerifyPolicy.from_env({"COALITION_VERIFY_FULL_SECONDS": "10"})  # below a minute
    with pytest.raises(ValueError, match="COALITION_VERIFY_ENTRIES_PER_RUN"):
        VerifyPolicy.from_env({"COALITION_VERIFY_ENTRIES_PER_RUN": "1e6"})
