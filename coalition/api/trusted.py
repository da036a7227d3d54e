"""Trusted documents: the operations in ``graphql/operations/<role>/``, known by the
SHA-256 of their text, and — for the roles ``COALITION_TRUSTED_DOCUMENTS`` names (say
``partner``) — the only documents a caller may run.

A client names a document by hash in the request's extensions, in the shape persisted-
query clients already send::

    {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "<64 hex>"}}, ...}

with or without the text (``query``); or sends the text alone, which must then hash to a
trusted document. A till's key that leaks can then run only what a till runs, and a
document nobody reviewed never reaches the executor.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coalition.database import PROJECT_ROOT

OPERATIONS_DIR = PROJECT_ROOT / "graphql" / "operations"
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class DocumentRefused:
    code: str  # the GraphQL error's extensions.code
    message: str


@dataclass(frozen=True, slots=True)
class TrustedDocuments:
    by_sha256_hex: Mapping[str, str]
    roles_held: frozenset[str]  # these callers may run trusted documents only

    @classmethod
    def load(cls, roles_held: Iterable[str], directory: Path = OPERATIONS_DIR) -> TrustedDocuments:
        documents = {}
        for path in sorted(directory.glob("*/*.graphql")):
            text = path.read_text(encoding="utf-8")
            documents[sha256_hex(text)] = text
        held = frozenset(roles_held)
        if held and not documents:
            raise ValueError(
                f"no trusted documents under {directory}, yet {sorted(held)} need them"
            )
        return cls(documents, held)

    def resolve(
        self, role: str | None, query: str | None, extensions: Mapping[str, Any] | None
    ) -> str | DocumentRefused | None:
        """The document text to run (None: the request had none), or why not."""
        named = _named_hash(extensions)
        if isinstance(named, DocumentRefused):
            return named
        if named is not None:
            if query is not None and sha256_hex(query) != named:
                return DocumentRefused(
                    "DOCUMENT_HASH_MISMATCH", "the query text does not have the hash it names"
                )
            document = self.by_sha256_hex.get(named)
            if document is None:
                return DocumentRefused(
                    "PERSISTED_QUERY_NOT_FOUND", "no trusted document has that hash"
                )
            return document
        if role in self.roles_held and (
            query is None or sha256_hex(query) not in self.by_sha256_hex
        ):
            return DocumentRefused(
                "TRUSTED_DOCUMENT_REQUIRED",
                "this key may run only the published operations (graphql/operations)",
            )
        return query


def sha256_hex(text: str) -> str:
    # JSON may carry a lone surrogate ("\ud800"): hash it too, rather than fail on it
    # (the parser or the argument checks then refuse the document).
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _named_hash(extensions: Mapping[str, Any] | None) -> str | DocumentRefused | None:
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    named = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if not isinstance(named, str) or _HASH.fullmatch(named) is None:
        return DocumentRefused(
            "BAD_USER_INPUT", "extensions.persistedQuery.sha256Hash is 64 lowercase hex digits"
        )
    return named
