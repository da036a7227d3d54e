"""A second verifier for journal.jsonl, sharing no code with the ledger package.

It checks the structure an auditor can check with SHA-256 alone (docs/FORMAT.md): every
line is the RFC 8785 form of a JSON object, ``v`` is 1, ``seq`` counts from 0, every
``prev`` is the previous line's leaf hash, each unit's postings sum to zero, and
corrections stay within what they correct (FORMAT.md §3a). It does not replay lots,
holds or balances; ``coalition verify`` does that.

It is written apart from ledger/verify.py on purpose, so that one mistake is unlikely to
hide in both: its own JCS serialiser (keys ordered by UTF-16 code units, as RFC 8785
says, rather than by code point with a fallback), and the Merkle root from the recursive
definition in RFC 6962 section 2.1 rather than from a frontier.

Standard library only. Exit status: 0 verified, 1 verification failed (the line is
named), 2 usage or unreadable input.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

FORMAT_VERSION = 1
INTEGER_MAX = 2**53 - 1
HASH_BYTES = 32
ZERO_HEX = "0" * 64

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_SHORT_ESCAPES["\t"] = "\\t"


class Failed(Exception):
    def __init__(self, line_number: int, check: str, detail: str) -> None:
        super().__init__(f"line {line_number} (seq {line_number - 1}): {check}: {detail}")


# ---------------------------------------------------------------- canonical form (RFC 8785)


def _refuse_number(text: str) -> Any:
    raise ValueError(f"number {text} is not an integer")


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > INTEGER_MAX:
        raise ValueError(f"integer {text} is outside ±(2^53-1)")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_strict(text: str) -> Any:
    return json.loads(
        text,
        parse_float=_refuse_number,
        parse_constant=_refuse_number,
        parse_int=_bounded_int,
        object_pairs_hook=_no_duplicate_keys,
    )


def _quote(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _utf16_order(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the code-unit sequences do.
    return key.encode("utf-16-be", "surrogatepass")


def jcs(value: Any) -> str:
    """RFC 8785 text of a value holding no floats (the journal never holds one)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=_utf16_order)
        return "{" + ",".join(_quote(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} has no canonical form here")


# ---------------------------------------------------------------- one line at a time


def _leaf_hash(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


def _check_line(line_number: int, line: bytes, prev_hex: str) -> dict[str, Any]:
    fail = functools.partial(Failed, line_number)
    try:
        text = line.decode("utf-8")
        entry = parse_strict(text)
        again = jcs(entry).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise fail("canonical", str(exc)) from None
    if again != line:
        raise fail("canonical", "the bytes are not the RFC 8785 form of their value")
    if not isinstance(entry, dict):
        raise fail("object", "a line must hold a JSON object")
    version = entry.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise fail("v", f"expected {FORMAT_VERSION}, got {version!r}")
    seq = entry.get("seq")
    if type(seq) is not int or seq != line_number - 1:
        raise fail("seq", f"expected {line_number - 1}, got {seq!r}")
    if entry.get("prev") != prev_hex:
        raise fail("prev", f"expected {prev_hex}, got {entry.get('prev')!r}")
    _check_balanced(entry.get("postings"), fail)
    return entry


class _Corrections:
    """FORMAT.md §3a, from its text: per account the corrected entry moved, the corrections
    together give back at most what it took and take back at most what it gave."""

    def __init__(self) -> None:
        self.moved: list[dict[str, int]] = []  # per seq: net per account
        self.given: dict[tuple[int, str], int] = {}
        self.taken: dict[tuple[int, str], int] = {}

    def check(self, line_number: int, entry: dict[str, Any]) -> None:
        net: dict[str, int] = {}
        for posting in entry["postings"]:
            net[posting["account"]] = net.get(posting["account"], 0) + posting["amount"]
        target = entry.get("corrects")
        if type(target) is int and 0 <= target < len(self.moved):
            original = self.moved[target]
            for account in sorted(net):
                if account not in original or net[account] == 0:
                    continue
                key = (target, account)
                if net[account] > 0:
                    self.given[key] = self.given.get(key, 0) + net[account]
                    if self.given[key] > max(0, -original[account]):
                        raise Failed(line_number, "correction", f"gives back too much to {account}")
                else:
                    self.taken[key] = self.taken.get(key, 0) - net[account]
                    if self.taken[key] > max(0, original[account]):
                        raise Failed(
                            line_number, "correction", f"takes back too much from {account}"
                        )
        self.moved.append({account: n for account, n in net.items() if n})


def _check_balanced(postings: Any, fail: Callable[[str, str], Failed]) -> None:
    if not isinstance(postings, list):
        raise fail("postings", "postings must be a list")
    totals: dict[str, int] = {}
    for posting in postings:
        unit = posting.get("unit") if isinstance(posting, dict) else None
        amount = posting.get("amount") if isinstance(posting, dict) else None
        if not isinstance(unit, str) or type(amount) is not int:
            raise fail("postings", f"posting without a unit and an integer amount: {posting!r}")
        totals[unit] = totals.get(unit, 0) + amount
    unbalanced = {unit: total for unit, total in sorted(totals.items()) if total}
    if unbalanced:
        raise fail("balance", f"postings do not sum to zero per unit: {unbalanced}")


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as journal:
        for line_number, raw in enumerate(journal, start=1):
            if not raw.endswith(b"\n"):
                raise Failed(line_number, "line_end", "every line, the last too, ends in \\n")
            yield line_number, raw[:-1]


def leaf_hashes_of(path: str) -> bytearray:
    """Check every line; return the leaf hashes, 32 bytes each, back to back."""
    leaves = bytearray()
    prev_hex = ZERO_HEX
    corrections = _Corrections()
    for line_number, line in _lines(path):
        corrections.check(line_number, _check_line(line_number, line, prev_hex))
        leaf = _leaf_hash(line)
        leaves += leaf
        prev_hex = leaf.hex()
    return leaves


# ---------------------------------------------------------------- RFC 6962 section 2.1


def merkle_tree_hash(leaves: bytes | bytearray, size: int) -> bytes:
    """MTH of the first ``size`` leaves, by the recursive definition."""
    if size == 0:
        return hashlib.sha256(b"").digest()
    return _mth(leaves, 0, size)


def _mth(leaves: bytes | bytearray, begin: int, end: int) -> bytes:
    count = end - begin
    if count == 1:
        return bytes(leaves[begin * HASH_BYTES : end * HASH_BYTES])
    split = 1 << ((count - 1).bit_length() - 1)  # the largest power of two below count
    left = _mth(leaves, begin, begin + split)
    right = _mth(leaves, begin + split, end)
    return hashlib.sha256(b"\x01" + left + right).digest()


# ---------------------------------------------------------------- command line


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="independent_verify",
        description="Check journal.jsonl with SHA-256 alone; print size, head and root.",
    )
    parser.add_argument("journal", help="the export, journal.jsonl")
    parser.add_argument("--expect-root", help="hex root hash recorded earlier")
    parser.add_argument(
        "--expect-size", type=int, help="the tree size that root was for (default: all lines)"
    )
    args = parser.parse_args(argv)
    if args.expect_size is not None and args.expect_size < 0:
        parser.error("--expect-size must not be negative")
    if args.expect_root is not None:
        try:
            args.expect_root = bytes.fromhex(args.expect_root)
        except ValueError:
            parser.error("--expect-root must be hex")
        if len(args.expect_root) != HASH_BYTES:
            parser.error("--expect-root must be 32 bytes of hex")
    return args


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    try:
        leaves = leaf_hashes_of(args.journal)
    except Failed as failure:
        print(f"FAILED {failure}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"cannot read {args.journal}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    size = len(leaves) // HASH_BYTES
    head_hex = leaves[-HASH_BYTES:].hex() if size else ZERO_HEX
    root = merkle_tree_hash(leaves, size)
    print(f"tree_size {size}")
    print(f"head_leaf_hash {head_hex}")
    print(f"root_hash {root.hex()}")
    expected_size = size if args.expect_size is None else args.expect_size
    if expected_size > size:
        print(f"FAILED truncated: {size} entries, {expected_size} expected", file=sys.stderr)
        return EXIT_FAILED
    if args.expect_root is not None:
        actual = merkle_tree_hash(leaves, expected_size)
        if actual != args.expect_root:
            print(
                f"FAILED root at size {expected_size}: expected {args.expect_root.hex()},"
                f" got {actual.hex()}",
                file=sys.stderr,
            )
            return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
