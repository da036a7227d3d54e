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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coalition.database import PROJECT_ROOT
from graphql import ASTValidationRule, DocumentNode, GraphQLError, parse

OPERATIONS_DIR = PROJECT_ROOT / "graphql" / "operations"
_HASH = re.compile(r"[0-9a-f]{64}")
PREPARED_MAX = 1024  # documents kept parsed and validated, per process


class PreparedDocuments:
    """Each document text parsed, and validated against a set of rules, once per process:
    a till sends the same few trusted documents all day, so from its second request on
    the text is looked up, not tokenised, parsed and walked by every validation rule.

    Keyed by the text itself (and, for validation, by the rules, which differ by
    deployment: introspection off in production), so two texts never share an entry.
    Bounded: past ``PREPARED_MAX`` documents the oldest is dropped (an untrusted caller
    sending new texts costs itself a parse each, never the process its memory). A text
    that does not parse is not kept; its error is raised each time.
    """

    def __init__(self, entries_max: int = PREPARED_MAX) -> None:
        self._entries_max = entries_max
        self._parsed: dict[tuple[str, tuple[tuple[str, Any], ...]], DocumentNode] = {}
        self._errors: dict[tuple[int, tuple[type[ASTValidationRule], ...]], list[GraphQLError]] = {}
        self._documents: dict[int, DocumentNode] = {}  # id → document, to keep ids unique

    def parsed(self, text: str, **options: Any) -> DocumentNode:
        key = (text, tuple(sorted(options.items())))
        document = self._parsed.get(key)
        if document is None:
            document = parse(text, **options)
            if len(self._parsed) >= self._entries_max:
                dropped = self._parsed.pop(next(iter(self._parsed)))
                self._documents.pop(id(dropped), None)
                self._errors = {k: v for k, v in self._errors.items() if k[0] != id(dropped)}
            self._parsed[key] = document
            self._documents[id(document)] = document
        return document

    def errors(
        self,
        document: DocumentNode,
        rules: tuple[type[ASTValidationRule], ...],
        validate: Callable[[], list[GraphQLError]],
    ) -> list[GraphQLError]:
        """The validation errors of a document from ``parsed`` under ``rules``, from
        ``validate()`` the first time (a copy each time: callers may add to it)."""
        if self._documents.get(id(document)) is not document:  # not ours: never cached
            return list(validate())
        key = (id(document), rules)
        errors = self._errors.get(key)
        if errors is None:
            errors = self._errors[key] = list(validate())
        return list(errors)


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
