"""The CLI makes partners payable and settles by principals: ``partner bank-account``
(checked), ``settle fx-rate`` (with its source and date), ``settle compute/approve/paid
--by`` naming a registered finance principal (a finance API key id, not revoked — free
text, another role's key or a revoked key is refused), approval refused while a party
cannot be paid, and ``settle runs [--party P]``."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest

from coalition import settle
from coalition.api_keys import create_key, revoke_key
from coalition.cli.main import main
from coalition.context import Coalition
from coalition.outcomes import Refusal
from coalition.partners import onboard_partner, publish_terms
from coalition.redeem import redeem_points
from coalition.seed import seed_if_empty
from ledger.signed_note import Signer, format_signer_key
from ledger.timefmt import now_us
from settlement import periods
from settlement.terms import PartnerTerms

ORIGIN = "ledger.cli-payable.example"


@pytest.fixture()
def cli_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A seeded database the CLI uses (DATABASE_URL), its signing key, and key ids."""
    signer = Signer.from_seed(ORIGIN, hashlib.sha256(b"cli payable").digest())
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("COALITION_LOG_ORIGIN", ORIGIN)
    monkeypatch.setenv("COALITION_SIGNING_KEY", format_signer_key(signer))
    keys = seed_if_empty(db_url)
    ids = {label: key.split("_")[1] for label, key in keys.items()}
    with psycopg.connect(db_url, autocommit=True) as conn:
        _, revoked = create_key(conn, "finance", None, "gone", now_us())
        assert revoke_key(conn, revoked.key_id, now_us())
    return {
        "db": db_url,
        "finance": ids["finance"],
        "finance2": ids["finance (second)"],
        "auditor": ids["auditor"],
        "revoked": revoked.key_id,
    }


def _end_now(monkeypatch: pytest.MonkeyPatch, label: str) -> None:
    """Period ``label`` ends now: it has ended, and every entry so far is in it."""
    real, end_us = periods.period_bounds, now_us()

    def bounds(name: str, zone: str) -> tuple[str, int, int]:
        return ("daily", real(name, zone)[1], end_us) if name == label else real(name, zone)

    monkeypatch.setattr(settle, "period_bounds", bounds)


def _ok(outcome: Any) -> Any:
    assert not isinstance(outcome, Refusal), outcome
    return outcome


def test_settling_from_the_cli_by_principals(
    cli_db: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    co = Coalition()
    terms = PartnerTerms.from_json(
        {
            "issuance_price_per_point": "50",
            "redemption_rate_per_point": "1",
            "operator_fee_bps": 100,
            "breakage_share": "0.5",
            "cycle": "daily",
            "mode": "multilateral",
        }
    )
    with psycopg.connect(cli_db["db"], autocommit=True) as conn:
        _ok(onboard_partner(co, conn, "kiosk", "Kiosk GmbH", "EUR"))
        _ok(publish_terms(co, conn, "kiosk", terms, now_us(), "terms:kiosk"))
        _ok(redeem_points(co, conn, partner_id="kiosk", ref_key="k1", points=30, member_id="M002"))

    bank = ["partner", "bank-account", "--partner", "kiosk", "--legal-name", "Kiosk GmbH"]
    bad = [*bank, "--iban", "DE02120300000000202052", "--bic", "BYLADEM1001", "--reference", "b0"]
    assert main(bad) == 1
    assert "IBAN" in capsys.readouterr().err
    good = [*bank, "--iban", "DE02120300000000202051", "--bic", "BYLADEM1001", "--reference", "b1"]
    assert main(good) == 0

    period = "2031-04-01"
    _end_now(monkeypatch, period)
    compute = ["settle", "compute", "--period", period]
    for who in ("alice", cli_db["auditor"], cli_db["revoked"]):  # not finance principals
        assert main([*compute, "--by", who]) == 2
        assert "not a registered finance principal" in capsys.readouterr().err
    assert main([*compute, "--by", cli_db["finance"]]) == 1  # EUR → RUB missing, named
    err = capsys.readouterr().err
    assert "FX_RATE_MISSING" in err and "EUR → RUB" in err and "grocer" in err

    fx = ["settle", "fx-rate", "--run", period, "--base", "EUR", "--quote", "RUB"]
    assert (
        main(
            [*fx, "--rate", "99.5", "--source", "CBR", "--date", "2031-13-01", "--reference", "f0"]
        )
        == 1
    )
    assert (
        main(
            [*fx, "--rate", "99.5", "--source", "CBR", "--date", "2031-03-31", "--reference", "f1"]
        )
        == 0
    )
    with psycopg.connect(cli_db["db"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT canonical FROM ledger_entry WHERE kind = 'fx_rate' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert (
        row is not None
        and b'"source":"CBR"' in bytes(row[0])
        and b'"date":"2031-03-31"' in bytes(row[0])
    )

    _end_now(monkeypatch, period)
    assert main([*compute, "--by", f"key:{cli_db['finance']}"]) == 0
    out = capsys.readouterr()
    assert f"computed by key:{cli_db['finance']}" in out.out and "NO_BANK_ACCOUNT" not in out.err

    approve = ["settle", "approve", "--run", period]
    assert main([*approve, "--by", "bob"]) == 2
    assert main([*approve, "--by", cli_db["finance"]]) == 1  # who computed it
    assert "same_approver" in capsys.readouterr().err
    assert main([*approve, "--by", cli_db["finance2"]]) == 0
    assert f"approved by key:{cli_db['finance2']}" in capsys.readouterr().out
    assert main(["settle", "paid", "--run", period, "--by", "carol"]) == 2
    assert main(["settle", "paid", "--run", period, "--by", cli_db["finance"]]) == 0
    capsys.readouterr()

    assert main(["settle", "runs", "--party", "kiosk"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:4] for line in listed] == [[period, period, "r1", "paid"]]
    assert main(["settle", "runs", "--party", "fuel"]) == 0  # fuel has no part in it
    assert capsys.readouterr().out == ""


def test_the_cli_refuses_to_approve_a_run_a_party_cannot_be_paid_in(
    cli_db: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    co = Coalition()
    terms = PartnerTerms.from_json(
        {
            "issuance_price_per_point": "50",
            "redemption_rate_per_point": "1",
            "operator_fee_bps": 100,
            "breakage_share": "0.5",
            "cycle": "daily",
            "mode": "multilateral",
        }
    )
    with psycopg.connect(cli_db["db"], autocommit=True) as conn:
        _ok(onboard_partner(co, conn, "kiosk", "Kiosk GmbH", "RUB"))
        _ok(publish_terms(co, conn, "kiosk", terms, now_us(), "terms:kiosk"))
        _ok(redeem_points(co, conn, partner_id="kiosk", ref_key="k1", points=30, member_id="M002"))
    period = "2031-05-01"
    _end_now(monkeypatch, period)
    assert main(["settle", "compute", "--period", period, "--by", cli_db["finance"]]) == 0
    assert "NO_BANK_ACCOUNT: kiosk has no bank account" in capsys.readouterr().err
    assert main(["settle", "approve", "--run", period, "--by", cli_db["finance2"]]) == 1
    err = capsys.readouterr().err
    assert "party_not_payable" in err and "kiosk" in err
