"""The checks of an entry that need nothing but the entry (and the time before it).

Fields and their types, names, units, times, amounts in range, the balance rule per
unit, the shapes of ``lot``/``lots``/``expired``/``debt`` wherever they appear, and
``corrects`` naming an earlier seq: everything of ``ledger.rules`` that reads no
account, lot or hold. ``ledger._lean_rules`` does the rest on the state. Together they
are every check of the reference; each raises ``Refer`` (any exception does) and the
reference names the failure.

Fields are checked wherever they appear, whatever the account: a field that is valid
on some posting (``lot`` on a lot-tracked credit, ``lots`` on a restore or a lot debit,
``expired``/``debt`` on a lot debit) has exactly this shape there in the reference, and
on any other posting the reference refuses it anyway. So a check here never refuses an
entry the reference accepts.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ledger._lean_canonical import meta_has_float
from ledger._lean_state import LeanState
from ledger.units import AMOUNT_MAX, is_valid_unit

_NAME: Final = re.compile(r"[\x21-\x7e]{1,128}")
_ENTRY_REQUIRED: Final = frozenset({"v", "seq", "prev", "time", "kind", "ref", "meta", "postings"})
_ENTRY_ALL: Final = _ENTRY_REQUIRED | {"open", "hold", "capture", "void", "corrects"}
_POSTING_REQUIRED: Final = frozenset({"account", "unit", "amount"})
_POSTING_ALL: Final = _POSTING_REQUIRED | {"lot", "lots", "expired", "debt"}
_REF: Final = frozenset({"scope", "key"})
_OPEN: Final = frozenset({"account", "unit", "overdraft", "lots"})
_LOT: Final = frozenset({"origin", "expires", "amount"})
_TAKE: Final = frozenset({"lot", "amount"})
_HOLD: Final = frozenset({"account", "unit", "amount", "expires"})
_CAPTURE: Final = frozenset({"hold", "amount"})
_VOID: Final = frozenset({"hold"})
POSTINGS_MAX, OPENS_MAX, TAKES_MAX = 64, 16, 1000


class Refer(Exception):
    """The lean checks cannot accept this entry: the reference judges it."""


def _name(value: Any, st: LeanState) -> None:
    if value not in st.valid_names:  # a name seen valid once stays valid
        if type(value) is not str or not _NAME.fullmatch(value):
            raise Refer
        st.valid_names.add(value)


def _text(value: Any, length_max: int) -> None:
    if type(value) is not str or not value or len(value) > length_max:
        raise Refer


def check_shape(e: dict[str, Any], seq: int, prev_hex: str | None, st: LeanState) -> int:
    """Raise ``Refer`` unless every entry-local rule holds; return the entry's time.

    Written out flat, with few calls: it runs once per entry, and a Python call costs
    about as much as the check it would hold."""
    keys = e.keys()
    if keys != _ENTRY_REQUIRED and not _ENTRY_REQUIRED <= keys <= _ENTRY_ALL:
        raise Refer
    v = e["v"]
    s = e["seq"]
    if type(v) is not int or v != 1 or type(s) is not int or s != seq:
        raise Refer
    if prev_hex is not None and e["prev"] != prev_hex:
        raise Refer
    time_us = st.times.get(e["time"])
    if time_us is None:
        time_us = st.time_us(e["time"])
    if time_us < st.last_time_us:
        raise Refer
    kind = e["kind"]
    if kind not in st.valid_texts:  # a kind or scope seen valid once stays valid
        _text(kind, 64)
        st.valid_texts.add(kind)  # 1–64 code points: valid as a kind and as a scope
    ref = e["ref"]
    if type(ref) is not dict or len(ref) != 2:
        raise Refer
    scope = ref["scope"]
    if scope not in st.valid_texts:
        _text(scope, 128)
        if len(scope) <= 64:  # not a kind otherwise
            st.valid_texts.add(scope)
    key = ref["key"]
    if type(key) is not str or not 0 < len(key) <= 128:
        raise Refer
    meta = e["meta"]
    if type(meta) is not dict:
        raise Refer
    for value in meta.values():
        if type(value) is not str:  # usually every value is a string: no walk
            if meta_has_float(meta):
                raise Refer
            break
    if keys != _ENTRY_REQUIRED:
        _optional_members(e, seq, time_us, st)
    postings = e["postings"]
    if type(postings) is not list or len(postings) > POSTINGS_MAX:
        raise Refer
    valid_names = st.valid_names
    unit0: Any = None
    sum0 = 0
    sums: dict[Any, int] | None = None  # only when a second unit shows up
    for p in postings:
        if type(p) is not dict:
            raise Refer
        if len(p) != 3 or p.keys() != _POSTING_REQUIRED:
            if not _POSTING_REQUIRED <= p.keys() <= _POSTING_ALL:
                raise Refer
            _posting_members(p, st)
        name = p["account"]
        if name not in valid_names:
            _name(name, st)
        amount = p["amount"]
        if type(amount) is not int or amount == 0 or not -AMOUNT_MAX <= amount <= AMOUNT_MAX:
            raise Refer
        unit = p["unit"]
        if unit == unit0 or unit0 is None:
            unit0 = unit
            sum0 += amount
        else:
            if sums is None:
                sums = {}
            sums[unit] = sums.get(unit, 0) + amount
    if sum0 or (sums is not None and any(sums.values())):
        raise Refer
    return time_us


def _posting_members(p: dict[str, Any], st: LeanState) -> None:
    if ("expired" in p and type(p["expired"]) is not bool) or (
        "debt" in p and type(p["debt"]) is not bool
    ):
        raise Refer
    if "lot" in p:
        spec = p["lot"]
        if type(spec) is not dict or len(spec) != 3 or spec.keys() != _LOT:
            raise Refer
        if spec["origin"] not in st.valid_names:
            _name(spec["origin"], st)
        expires = spec["expires"]
        if expires is not None and expires not in st.times:
            st.time_us(expires)
        if type(spec["amount"]) is not int:
            raise Refer
    if "lots" in p:
        named = p["lots"]
        if type(named) is not list or len(named) > TAKES_MAX:
            raise Refer
        for item in named:
            if type(item) is not dict or len(item) != 2:
                raise Refer
            take = item["amount"]  # KeyError: not {lot, amount}
            if type(item["lot"]) is not str or type(take) is not int or take <= 0:
                raise Refer


def _optional_members(e: dict[str, Any], seq: int, time_us: int, st: LeanState) -> None:
    if ("hold" in e) + ("capture" in e) + ("void" in e) > 1:
        raise Refer
    if "open" in e:
        opens = e["open"]
        if type(opens) is not list or len(opens) > OPENS_MAX:
            raise Refer
        for spec in opens:
            if type(spec) is not dict or spec.keys() != _OPEN:
                raise Refer
            _name(spec["account"], st)
            unit = spec["unit"]
            if type(unit) is not str or not is_valid_unit(unit):
                raise Refer
            if type(spec["overdraft"]) is not bool or type(spec["lots"]) is not bool:
                raise Refer
    if "capture" in e:
        capture = e["capture"]
        if type(capture) is not dict or capture.keys() != _CAPTURE:
            raise Refer
        amount = capture["amount"]
        if type(capture["hold"]) is not int or type(amount) is not int or amount <= 0:
            raise Refer
    if "hold" in e:
        spec = e["hold"]
        if type(spec) is not dict or spec.keys() != _HOLD:
            raise Refer
        _name(spec["account"], st)
        amount = spec["amount"]
        if type(amount) is not int or not 0 < amount <= AMOUNT_MAX:
            raise Refer
        if st.time_us(spec["expires"]) <= time_us:
            raise Refer
    if "void" in e:
        void = e["void"]
        if type(void) is not dict or void.keys() != _VOID or type(void["hold"]) is not int:
            raise Refer
    if "corrects" in e:
        corrects = e["corrects"]
        if type(corrects) is not int or not 0 <= corrects < seq:
            raise Refer
