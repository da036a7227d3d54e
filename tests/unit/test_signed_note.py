"""Signed notes: Go's golang.org/x/mod/sumdb/note test vectors, byte for byte, then our rules."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.signed_note import (
    MAX_SIGNATURES,
    NoteError,
    Signature,
    Signer,
    Verifier,
    compute_key_id,
    format_signer_key,
    format_vkey,
    generate_signer,
    is_valid_key_name,
    open_note,
    parse_note,
    parse_signer_key,
    parse_vkey,
    sign_note,
)
from ledger.signing_key import (
    SigningKeyError,
    generate_signer_file,
    load_signer_env,
    load_signer_file,
    vkey_of,
)

# From golang.org/x/mod/sumdb/note/note_test.go.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    "dngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)
PETER_SIGNATURE = Signature("PeterNeumann", 0xC74F20A3, PETER_SIG[15:-1])
ENOCH_SIGNATURE = Signature("EnochRoot", 0xAF0CFE78, ENOCH_SIG[12:-1])
# From the Go command's sumdb tests: a key ID with leading zeros and '+' inside base64.
SUMDB_SKEY = (
    "PRIVATE+KEY+localhost.localdev/sumdb+00000c67+AXu6+oaVaOYuQOFrf1V59JK1owcFlJcHwwXHDfDGxSPk"
)
SUMDB_VKEY = "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6"

PETER = parse_vkey(PETER_VKEY)
ENOCH = parse_vkey(ENOCH_VKEY)


def _note(*sigs: str) -> bytes:
    return (TEXT + "\n" + "".join(sigs)).encode("utf-8")


def _code(excinfo: pytest.ExceptionInfo[NoteError]) -> str:
    return excinfo.value.code


# --- Go interoperability ------------------------------------------------------------


def test_sign_reproduces_go_bytes() -> None:
    signer = parse_signer_key(PETER_SKEY)
    assert sign_note(TEXT, signer) == _note(PETER_SIG)
    assert sign_note(TEXT, [signer]) == _note(PETER_SIG)


def test_keys_round_trip_and_match() -> None:
    signer = parse_signer_key(PETER_SKEY)
    assert format_signer_key(signer) == PETER_SKEY
    assert format_vkey(signer.verifier()) == PETER_VKEY
    assert signer.verifier() == PETER
    assert PETER.vkey == PETER_VKEY
    assert (signer.name, signer.key_id) == ("PeterNeumann", 0xC74F20A3)
    sumdb = parse_signer_key(SUMDB_SKEY)
    assert format_signer_key(sumdb) == SUMDB_SKEY
    assert sumdb.verifier().vkey == SUMDB_VKEY
    assert parse_vkey(SUMDB_VKEY).key_id == 0x00000C67


def test_open_one_known_one_unknown() -> None:
    note = open_note(_note(PETER_SIG, ENOCH_SIG), [PETER])
    assert note.text == TEXT
    assert note.signatures == (PETER_SIGNATURE,)
    assert note.unverified == (ENOCH_SIGNATURE,)


def test_open_both_known() -> None:
    note = open_note(_note(PETER_SIG, ENOCH_SIG), [PETER, ENOCH])
    assert note.signatures == (PETER_SIGNATURE, ENOCH_SIGNATURE)
    assert note.unverified == ()


def test_open_without_known_keys_is_rejected() -> None:
    with pytest.raises(NoteError) as excinfo:
        open_note(_note(PETER_SIG, ENOCH_SIG), [])
    assert _code(excinfo) == "no_verified_signature"


def test_duplicate_verifiers_are_harmless() -> None:
    assert open_note(_note(ENOCH_SIG), [ENOCH, PETER, ENOCH]).signatures == (ENOCH_SIGNATURE,)


def test_too_many_signatures() -> None:
    for verifiers in ([PETER], []):
        with pytest.raises(NoteError) as excinfo:
            open_note(_note(PETER_SIG * (MAX_SIGNATURES + 1)), verifiers)
        assert _code(excinfo) == "malformed"
    assert open_note(_note(PETER_SIG * MAX_SIGNATURES), [PETER]).signatures == (PETER_SIGNATURE,)


def test_corrupted_known_signature_rejects_the_note() -> None:
    # Go's test splices "ABCD" at byte 60; the offsets are bytes because of the em dash.
    raw = PETER_SIG.encode("utf-8")
    bad = raw[:60] + b"ABCD" + raw[60:]
    with pytest.raises(NoteError) as excinfo:
        open_note(TEXT.encode() + b"\n" + bad, [PETER])
    assert _code(excinfo) == "bad_signature"


def test_duplicated_and_unknown_signatures() -> None:
    raw = ENOCH_SIG.encode("utf-8")
    enoch_abcd = (raw[:60] + b"ABCD" + raw[60:]).decode("utf-8")
    note = open_note(_note(PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG, enoch_abcd), [PETER])
    assert note.signatures == (PETER_SIGNATURE,)
    assert note.unverified == (
        ENOCH_SIGNATURE,
        Signature("EnochRoot", 0xAF0CFE78, enoch_abcd[12:-1]),
    )


@pytest.mark.parametrize(
    "message",
    [
        TEXT.encode(),
        (TEXT + "\n").encode(),
        (TEXT + "\n" + PETER_SIG[:-1]).encode(),
        b"\x01" + _note(PETER_SIG),
        b"\xff" + _note(PETER_SIG),
        (TEXT + "\n— Bad Name " + PETER_SIG[15:]).encode(),
        _note(PETER_SIG, "Unexpected line.\n"),
        # Beyond Go's list: no key ID and signature, bad base64, a control character.
        _note("— PeterNeumann AAAA\n"),
        _note("— PeterNeumann not*base64\n"),
        _note("— PeterNeumann\n"),
        _note(PETER_SIG.replace("—", "-")),
        ("If\tyou\n\n" + PETER_SIG).encode(),
        _note(PETER_SIG, "\n"),
    ],
)
def test_malformed_notes(message: bytes) -> None:
    with pytest.raises(NoteError) as excinfo:
        open_note(message, [PETER])
    assert _code(excinfo) == "malformed"


def test_vkey_manglings_are_refused() -> None:
    # Go's TestNewVerifier: every proper substring and every single-byte increment fails.
    vkey = PETER_VKEY
    for i in range(len(vkey) + 1):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(NoteError):
                    parse_vkey(vkey[i:j])
    for i in range(len(vkey)):
        with pytest.raises(NoteError):
            parse_vkey(vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :])


def test_skey_manglings_are_refused() -> None:
    skey = PETER_SKEY
    for i in range(len(skey) + 1):
        for j in range(i + 1, len(skey) + 1):
            if (i, j) != (0, len(skey)):
                with pytest.raises(NoteError):
                    parse_signer_key(skey[i:j])
    for i in range(len(skey)):
        with pytest.raises(NoteError):
            parse_signer_key(skey[:i] + chr(ord(skey[i]) + 1) + skey[i + 1 :])


@pytest.mark.parametrize(
    ("vkey", "code"),
    [
        # Go's: wrong key length and unknown algorithm, each with a matching key ID.
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "malformed_key",
        ),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "unknown_algorithm"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key_id_mismatch"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid_name"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "invalid_name"),
        ("PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "malformed_key"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "malformed_key"),
        ("PeterNeumann+c74f20a3", "malformed_key"),
    ],
)
def test_vkey_errors(vkey: str, code: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        parse_vkey(vkey)
    assert _code(excinfo) == code


def test_uppercase_key_id_is_accepted_like_go() -> None:
    assert parse_vkey(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == PETER


@pytest.mark.parametrize(
    "name",
    ["", "a+b", "a b", "tab\there", "nbsp\xa0", "ideographic\u3000", "en\u2002", "\x01", "\ud800"],
)
def test_invalid_key_names(name: str) -> None:
    assert not is_valid_key_name(name)
    with pytest.raises(NoteError) as excinfo:
        Verifier.from_public_key(name, bytes(32))
    assert _code(excinfo) == "invalid_name"


def test_valid_key_names() -> None:
    for name in ["example.com/log", "ünïcode", "a", "zero\u200bwidth", "em—dash"]:
        assert is_valid_key_name(name)


def test_verifier_refuses_a_wrong_key_id() -> None:
    with pytest.raises(NoteError) as excinfo:
        Verifier("PeterNeumann", PETER.key_id ^ 1, PETER.public_key)
    assert _code(excinfo) == "key_id_mismatch"


def test_key_id_is_spec_formula() -> None:
    import hashlib

    digest = hashlib.sha256(b"PeterNeumann\n\x01" + PETER.public_key).digest()
    assert compute_key_id("PeterNeumann", PETER.public_key) == int.from_bytes(digest[:4], "big")


def test_signer_repr_hides_the_secret() -> None:
    signer = parse_signer_key(PETER_SKEY)
    assert "AYEKFALV" not in repr(signer)
    assert base64.b64encode(signer.seed()).decode() not in repr(signer)


# --- tampering and key mix-ups ------------------------------------------------------


def test_flipped_text_byte_is_a_bad_signature() -> None:
    note = bytearray(_note(PETER_SIG))
    note[3] ^= 0x01
    with pytest.raises(NoteError) as excinfo:
        open_note(bytes(note), [PETER])
    assert _code(excinfo) == "bad_signature"


def test_flipped_signature_byte_is_a_bad_signature() -> None:
    raw = bytearray(base64.b64decode(PETER_SIGNATURE.base64))
    raw[10] ^= 0x80  # past the 4-byte key ID, so the key still matches
    line = f"— PeterNeumann {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteError) as excinfo:
        open_note(_note(line), [PETER])
    assert _code(excinfo) == "bad_signature"


def test_wrong_key_is_not_a_verification() -> None:
    _, other_vkey = generate_signer("PeterNeumann")  # same name, different key and key ID
    with pytest.raises(NoteError) as excinfo:
        open_note(_note(PETER_SIG), [parse_vkey(other_vkey)])
    assert _code(excinfo) == "no_verified_signature"


def test_same_name_different_key_id_is_ignored_as_unknown() -> None:
    raw = bytearray(base64.b64decode(PETER_SIGNATURE.base64))
    raw[0] ^= 0x01
    line = f"— PeterNeumann {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteError) as excinfo:
        open_note(_note(line), [PETER])
    assert _code(excinfo) == "no_verified_signature"
    # Beside a good signature it is merely set aside.
    note = open_note(_note(PETER_SIG, line), [PETER])
    assert note.signatures == (PETER_SIGNATURE,)
    assert [s.key_id for s in note.unverified] == [0xC74F20A3 ^ 0x01000000]


def test_a_bad_known_signature_spoils_a_good_one() -> None:
    raw = bytearray(base64.b64decode(ENOCH_SIGNATURE.base64))
    raw[20] ^= 0x01
    bad_enoch = f"— EnochRoot {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteError) as excinfo:
        open_note(_note(PETER_SIG, bad_enoch), [PETER, ENOCH])
    assert _code(excinfo) == "bad_signature"


# --- signing rules and round trips --------------------------------------------------


@pytest.mark.parametrize("text", ["", "no newline", "tab\there\n", "cr\r\n"])
def test_sign_refuses_bad_text(text: str) -> None:
    with pytest.raises(NoteError) as excinfo:
        sign_note(text, parse_signer_key(PETER_SKEY))
    assert _code(excinfo) == "malformed"


def test_sign_needs_a_signer() -> None:
    with pytest.raises(NoteError):
        sign_note(TEXT, [])


def test_multiple_signers_and_parse_note() -> None:
    a_skey, a_vkey = generate_signer("a.example/log")
    b_skey, b_vkey = generate_signer("b.example/witness")
    signed = sign_note(TEXT, [parse_signer_key(a_skey), parse_signer_key(b_skey)])
    text, sigs = parse_note(signed)
    assert text == TEXT
    assert [s.name for s in sigs] == ["a.example/log", "b.example/witness"]
    note = open_note(signed, [parse_vkey(b_vkey)])
    assert [s.name for s in note.signatures] == ["b.example/witness"]
    assert [s.name for s in note.unverified] == ["a.example/log"]
    assert len(open_note(signed, [parse_vkey(a_vkey), parse_vkey(b_vkey)]).signatures) == 2


def test_text_with_its_own_blank_lines() -> None:
    signer = parse_signer_key(PETER_SKEY)
    for text in ["\n", "a\n\nb\n", "a\n\n\n", "— looks like a signature\n\n"]:
        assert open_note(sign_note(text, signer), [PETER]).text == text


def test_generated_keys_work() -> None:
    skey, vkey = generate_signer("example.com/log")
    signer = parse_signer_key(skey)
    assert isinstance(signer, Signer)
    assert format_vkey(signer.verifier()) == vkey
    assert open_note(sign_note("hi\n", signer), [parse_vkey(vkey)]).text == "hi\n"


# Everything a note may hold: no control characters but newline, no lone surrogates.
_note_chars = (
    st.characters(min_codepoint=0x20, max_codepoint=0xD7FF)
    | st.characters(min_codepoint=0xE000)
    | st.just("\n")
)


@given(st.text(_note_chars, max_size=200))
def test_round_trip_property(body: str) -> None:
    text = body + "\n"
    signed = sign_note(text, parse_signer_key(PETER_SKEY))
    note = open_note(signed, [PETER])
    assert note.text == text
    assert note.signatures[0].name == "PeterNeumann"


# --- the log's signing key (ledger.signing_key) -------------------------------------


def test_key_file_is_owner_only_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    vkey = generate_signer_file(path, "ledger.example/coalition")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("PRIVATE+KEY+ledger.example/coalition+")
    signer = load_signer_file(path)
    assert vkey_of(signer) == vkey
    assert open_note(sign_note("x\n", signer), [parse_vkey(vkey)]).text == "x\n"


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    generate_signer_file(path, "a.example/log")
    before = path.read_bytes()
    with pytest.raises(SigningKeyError) as excinfo:
        generate_signer_file(path, "a.example/log")
    assert excinfo.value.code == "exists"
    assert path.read_bytes() == before
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(SigningKeyError):
        generate_signer_file(link, "a.example/log")
    assert not (tmp_path / "nowhere").exists()


def test_key_from_environment() -> None:
    signer = load_signer_env("LOG_KEY", {"LOG_KEY": PETER_SKEY + "\n"})
    assert vkey_of(signer) == PETER_VKEY
    with pytest.raises(SigningKeyError) as excinfo:
        load_signer_env("LOG_KEY", {})
    assert excinfo.value.code == "missing"
    with pytest.raises(SigningKeyError) as excinfo:
        load_signer_env("LOG_KEY", {"LOG_KEY": "  "})
    assert excinfo.value.code == "missing"


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError) as excinfo:
        load_signer_file(tmp_path / "absent.key")
    assert excinfo.value.code == "missing"


@pytest.mark.parametrize(
    "garbled",
    [
        PETER_SKEY[:-1] + "A",  # another seed: key ID no longer matches
        PETER_SKEY.replace("PRIVATE+KEY+", "PRIVATE+KEYS+"),
        PETER_SKEY[:-4],
        PETER_VKEY,  # a public key where the secret belongs
    ],
)
def test_garbled_key_is_refused_without_echoing_it(tmp_path: Path, garbled: str) -> None:
    path = tmp_path / "log.key"
    path.write_text(garbled)
    with pytest.raises(SigningKeyError) as from_file:
        load_signer_file(path)
    with pytest.raises(SigningKeyError) as from_env:
        load_signer_env("K", {"K": garbled})
    for error in (from_file.value, from_env.value):
        assert error.code == "malformed"
        shown = f"{error!s} {error!r} {error.__cause__!r}"
        shown += "" if error.__suppress_context__ else repr(error.__context__)
        assert garbled[-20:] not in shown
        assert "AYEKFALV" not in shown


def test_binary_key_file_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    path.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(SigningKeyError) as excinfo:
        load_signer_file(path)
    assert excinfo.value.code == "malformed"
