"""Trusted documents: which request texts and hashes run, for held and free roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from coalition.api.trusted import OPERATIONS_DIR, DocumentRefused, TrustedDocuments, sha256_hex
from coalition.settings import Settings

WHO = "query WhoAmI { me { role } }\n"


@pytest.fixture()
def trusted(tmp_path: Path) -> TrustedDocuments:
    (tmp_path / "partner").mkdir()
    (tmp_path / "partner" / "WhoAmI.graphql").write_text(WHO)
    return TrustedDocuments.load({"partner"}, tmp_path)


def persisted(digest: object) -> dict[str, object]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def refused_code(outcome: object) -> str:
    assert isinstance(outcome, DocumentRefused), outcome
    return outcome.code


def test_a_held_role_runs_a_trusted_text_or_hash_and_nothing_else(trusted):
    assert trusted.resolve("partner", WHO, None) == WHO
    assert trusted.resolve("partner", None, persisted(sha256_hex(WHO))) == WHO
    assert trusted.resolve("partner", WHO, persisted(sha256_hex(WHO))) == WHO
    other = "{ me { role } }"
    assert refused_code(trusted.resolve("partner", other, None)) == "TRUSTED_DOCUMENT_REQUIRED"
    assert refused_code(trusted.resolve("partner", None, None)) == "TRUSTED_DOCUMENT_REQUIRED"
    # One changed byte is another document.
    edited = WHO.replace("role", "role ")
    assert refused_code(trusted.resolve("partner", edited, None)) == "TRUSTED_DOCUMENT_REQUIRED"


def test_other_roles_run_free_text_but_named_hashes_must_be_known(trusted):
    free = "{ me { keyId } }"
    assert trusted.resolve("auditor", free, None) == free
    assert trusted.resolve(None, free, None) == free  # then authentication says no
    assert trusted.resolve("auditor", None, persisted(sha256_hex(WHO))) == WHO
    unknown = persisted(sha256_hex(free))
    assert refused_code(trusted.resolve("auditor", None, unknown)) == "PERSISTED_QUERY_NOT_FOUND"


@pytest.mark.parametrize("digest", ["", "ABC", "g" * 64, 7, None, "A" * 64])
def test_a_malformed_hash_is_bad_input(trusted, digest):
    assert refused_code(trusted.resolve("auditor", None, persisted(digest))) == "BAD_USER_INPUT"


def test_a_text_must_match_the_hash_it_names(trusted):
    named = persisted(sha256_hex(WHO))
    code = refused_code(trusted.resolve("partner", "{ me { keyId } }", named))
    assert code == "DOCUMENT_HASH_MISMATCH"


def test_the_published_operations_are_the_trusted_set():
    published = TrustedDocuments.load({"partner"})
    files = sorted(OPERATIONS_DIR.glob("*/*.graphql"))
    assert len(files) >= 30
    assert set(published.by_sha256_hex) == {sha256_hex(f.read_text()) for f in files}


def test_holding_roles_to_no_documents_is_refused_at_start(tmp_path: Path):
    with pytest.raises(ValueError, match="no trusted documents"):
        TrustedDocuments.load({"partner"}, tmp_path)
    assert TrustedDocuments.load(set(), tmp_path).roles_held == frozenset()


def test_the_setting_names_known_roles_only(monkeypatch):
    monkeypatch.setenv("COALITION_TRUSTED_DOCUMENTS", "partner, finance")
    assert Settings.from_env().trusted_documents_roles == {"partner", "finance"}
    monkeypatch.setenv("COALITION_TRUSTED_DOCUMENTS", "partner,till")
    with pytest.raises(ValueError, match="unknown roles"):
        Settings.from_env()
    monkeypatch.delenv("COALITION_TRUSTED_DOCUMENTS")
    assert Settings.from_env().trusted_documents_roles == frozenset()


def test_metrics_label_published_operations_by_name_and_the_rest_as_other():
    from coalition.api.observability import PUBLISHED_OPERATIONS, operation_label

    files = sorted(OPERATIONS_DIR.glob("*/*.graphql"))
    assert len(PUBLISHED_OPERATIONS) == len(files)  # one named operation a file
    assert {f.stem for f in files} == PUBLISHED_OPERATIONS
    assert operation_label("MemberBalance") == "MemberBalance"
    assert operation_label("AnyNameAtAll") == "other"
    assert operation_label("x" * 10_000) == "other"
    assert operation_label(None) == "anonymous"
