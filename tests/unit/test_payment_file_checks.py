"""What makes a payment file one a bank accepts: a new message id each time, a real
execution date not in the past, validity against the XSD when written, and bank details
checked in one place (coalition.banking, with schwifty) — for partners and the clearing
account alike, which must be configured outside the demo. Reconciliation answers in
RFC 3339 times."""

from __future__ import annotations

import importlib.resources
import json
import re
import xml.etree.ElementTree as ET
from functools import cache

import pytest
import xmlschema

from coalition import banking
from coalition.banking import (
    DEMO_CLEARING,
    ClearingAccountNotConfigured,
    InvalidBankAccount,
    bank_account_problem,
    check_bank_account,
    clearing_from_env,
    make_iban,
)
from ledger.timefmt import parse_time_us
from settlement.pain001 import (
    MESSAGE_ID_MAX,
    NAMESPACE,
    XSD,
    Clearing,
    InvalidExecutionDate,
    InvalidPaymentFile,
    new_message_id,
    pain001,
)
from settlement.reconcile import Record, parse_records, reconcile
from settlement.run import Run, compute_run
from tests.unit._memory_journal import RUN_ID, Story, january_story

CLEARING = Clearing("Coalition Clearing", "DE44500105175407324931", "INGDDEFFXXX")
CREATED_US = parse_time_us("2027-02-10T09:30:00.000000Z")
NS = {"p": NAMESPACE}
# The pain.001 character set for identifiers (SEPA's Latin subset), at most 35 characters.
MESSAGE_ID = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]{1,35}")


@cache
def official_schema() -> xmlschema.XMLSchema:
    path = importlib.resources.files("sepaxml") / "schemas" / "pain.001.001.09.xsd"
    return xmlschema.XMLSchema(str(path))


@pytest.fixture(scope="module")
def story() -> Story:
    return january_story()


@pytest.fixture(scope="module")
def run(story: Story) -> Run:
    return compute_run(
        iter(story.journal.entries),
        run_id=RUN_ID,
        period="2027-01",
        start_seq=story.start_seq,
        end_seq=story.end_seq,
        checkpoint={"tree_size": 39, "root_hex": "ab" * 32},
    )


def message_id(document: bytes) -> str:
    found = ET.fromstring(document).findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:MsgId", namespaces=NS)
    assert found is not None
    return found


# --- the message id -------------------------------------------------------------------


def test_two_generations_of_one_run_have_different_message_ids(run: Run) -> None:
    first = pain001(run, CLEARING, CREATED_US, "2027-02-10")
    again = pain001(run, CLEARING, CREATED_US, "2027-02-10")  # even in the same microsecond
    official_schema().validate(first.decode("utf-8"))
    official_schema().validate(again.decode("utf-8"))
    assert message_id(first) != message_id(again)
    later = pain001(run, CLEARING, CREATED_US + 1, "2027-02-10")
    assert len({message_id(first), message_id(again), message_id(later)}) == 3


def test_a_message_id_names_the_run_and_the_time_within_35_characters() -> None:
    made = new_message_id("2027-01", CREATED_US)
    assert re.fullmatch(r"2027-01-270210093000000000[A-Z0-9]{5}", made), made
    long_run = new_message_id("2027-01-15-r12/ü" + "x" * 50, CREATED_US)
    assert len(long_run) <= MESSAGE_ID_MAX and MESSAGE_ID.fullmatch(long_run), long_run
    assert long_run.startswith("2027-01-15-")
    ids = {new_message_id("2027-01", CREATED_US) for _ in range(200)}
    assert len(ids) == 200


# --- the execution date ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["tomorrow", "2027-02-30", "2027-2-10", "10.02.2027", ""])
def test_an_execution_date_that_is_not_a_date_is_refused(run: Run, text: str) -> None:
    with pytest.raises(InvalidExecutionDate, match="not a date"):
        pain001(run, CLEARING, CREATED_US, text)


def test_an_execution_date_in_the_past_is_refused_today_is_allowed(run: Run) -> None:
    with pytest.raises(InvalidExecutionDate, match="in the past"):
        pain001(run, CLEARING, CREATED_US, "2027-02-09", timezone="Europe/Moscow")
    document = pain001(run, CLEARING, CREATED_US, "2027-02-10", timezone="Europe/Moscow")
    dates = ET.fromstring(document).findall(".//p:ReqdExctnDt/p:Dt", NS)
    assert dates and {d.text for d in dates} == {"2027-02-10"}
    # 22:30 UTC on the 10th is already the 11th in Moscow.
    late = CREATED_US + 13 * 3_600_000_000
    with pytest.raises(InvalidExecutionDate, match="today is 2027-02-11 in Europe/Moscow"):
        pain001(run, CLEARING, late, "2027-02-10", timezone="Europe/Moscow")


# --- validated against the XSD when written -------------------------------------------


def test_the_shipped_xsd_is_the_official_one() -> None:
    official = importlib.resources.files("sepaxml") / "schemas" / "pain.001.001.09.xsd"
    assert XSD.read_bytes() == official.read_bytes()


def test_a_file_the_schema_refuses_is_never_handed_out(run: Run) -> None:
    too_long = Clearing("C" * 141, CLEARING.iban, CLEARING.bic)  # Nm is Max140Text
    with pytest.raises(InvalidPaymentFile, match=r"not valid pain\.001\.001\.09"):
        pain001(run, too_long, CREATED_US, "2027-02-10")
    lower_bic = Clearing(CLEARING.name, CLEARING.iban, "ingddeffxxx")
    with pytest.raises(InvalidPaymentFile, match="BICFI"):
        pain001(run, lower_bic, CREATED_US, "2027-02-10")


# --- bank details, in one place -------------------------------------------------------


def test_a_15_character_german_iban_is_refused_though_its_check_digits_add_up() -> None:
    short = make_iban("DE", "37040044053")  # mod-97 holds; Germany's IBANs have 22
    assert len(short) == 15
    assert bank_account_problem(short, "COBADEFFXXX", "Grocer") == (
        f"IBAN {short!r}: invalid IBAN length"
    )
    with pytest.raises(InvalidBankAccount, match="length"):
        check_bank_account(short, "COBADEFFXXX", "Grocer")


def test_an_invented_country_code_is_refused() -> None:
    invented = make_iban("XQ", "370400440532013000")
    assert "country" in (banking.iban_problem(invented) or "")
    assert "country" in (banking.bic_problem("COBAXQFFXXX") or "")


@pytest.mark.parametrize(
    ("iban", "bic", "name", "wrong"),
    [
        ("DE89370400440532013000", "COBADEFFXXX", "Grocer GmbH", None),
        ("GB29NWBK60161331926819", "NWBKGB2L", "Gamma Books Ltd", None),
        ("DE89370400440532013001", "COBADEFFXXX", "Grocer", "checksum"),
        ("DE89 3704 0044 0532 0130 00", "COBADEFFXXX", "Grocer", "capitals without spaces"),
        ("de89370400440532013000", "COBADEFFXXX", "Grocer", "capitals without spaces"),
        ("", "COBADEFFXXX", "Grocer", "IBAN is required"),
        ("DE89370400440532013000", "COBADEF", "Grocer", "BIC"),
        ("DE89370400440532013000", "COBADEFFXXX", "", "name"),
        ("DE89370400440532013000", "COBADEFFXXX", "x" * 141, "name"),
    ],
)
def test_bank_accounts_are_checked_and_the_reason_named(
    iban: str, bic: str, name: str, wrong: str | None
) -> None:
    problem = bank_account_problem(iban, bic, name)
    assert (problem is None) if wrong is None else (wrong in (problem or "")), problem
    assert banking.iban_is_valid(iban) is (banking.iban_problem(iban) is None)


# --- the clearing account -------------------------------------------------------------

CONFIGURED = {
    "COALITION_CLEARING_NAME": "Coalition Clearing AG",
    "COALITION_CLEARING_IBAN": "DE44500105175407324931",
    "COALITION_CLEARING_BIC": "INGDDEFFXXX",
}


def test_no_clearing_account_without_configuration() -> None:
    with pytest.raises(ClearingAccountNotConfigured, match="COALITION_CLEARING_IBAN"):
        clearing_from_env({})
    assert clearing_from_env({}, demo=True) == DEMO_CLEARING  # the demo's own, only there


def test_the_configured_clearing_account_is_used_and_checked() -> None:
    clearing = Clearing("Coalition Clearing AG", "DE44500105175407324931", "INGDDEFFXXX")
    assert clearing_from_env(CONFIGURED) == clearing
    assert clearing_from_env(CONFIGURED, demo=True) == clearing
    partial = {k: v for k, v in CONFIGURED.items() if k != "COALITION_CLEARING_BIC"}
    with pytest.raises(ClearingAccountNotConfigured, match=r"only in part.*BIC"):
        clearing_from_env(partial, demo=True)
    bad = {**CONFIGURED, "COALITION_CLEARING_IBAN": make_iban("DE", "37040044053")}
    with pytest.raises(ClearingAccountNotConfigured, match="length"):
        clearing_from_env(bad)


def test_settle_clearing_account_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from coalition.settle import clearing_account

    for variable in CONFIGURED:
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ClearingAccountNotConfigured):
        clearing_account()
    for variable, value in CONFIGURED.items():
        monkeypatch.setenv(variable, value)
    assert clearing_account().name == "Coalition Clearing AG"


# --- reconciliation speaks RFC 3339 ---------------------------------------------------


def test_a_time_mismatch_is_shown_in_rfc_3339() -> None:
    def record(time: str) -> Record:
        return Record("g1", "earn", "M1", 5, 500, parse_time_us(time))

    ours = [record("2027-01-15T08:00:05.000000Z")]
    theirs = [record("2027-01-15T09:00:05.000000Z")]
    result = reconcile(ours, theirs, 300_000_000).to_json()
    assert result["mismatched"] == [
        {
            "ref": "g1",
            "field": "time",
            "ours": "2027-01-15T08:00:05.000000Z",
            "theirs": "2027-01-15T09:00:05.000000Z",
        }
    ]
    assert ours[0].to_json()["time"] == "2027-01-15T08:00:05.000000Z"


def test_records_may_be_read_with_a_laxer_time_reader() -> None:
    from coalition.time_input import parse_instant

    row = {"ref": "g1", "kind": "earn", "member": "M1", "points": 5}
    data = json.dumps([{**row, "time": "2027-01-15T11:00:05+03:00"}]).encode()
    [read] = parse_records(data, "json", parse_instant)
    assert read.time_us == parse_time_us("2027-01-15T08:00:05.000000Z")
