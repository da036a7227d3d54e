"""GraphQL errors with an ``extensions.code``; anything else is masked for clients
(logged with the request id) so no traceback or SQL ever leaves the server."""

from __future__ import annotations

from graphql import GraphQLError


class ApiError(Exception):
    code = "INTERNAL"
    message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        # graphql-core reports original_error.message: the instance's, not the class's.
        self.message = message or type(self).message
        super().__init__(self.message)
        self.extensions = {"code": self.code}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"
    message = "send a valid API key as 'Authorization: Bearer <key>'"


class Forbidden(ApiError):
    code = "FORBIDDEN"
    message = "this key may not do that"


class PartnerSuspended(ApiError):
    """A suspended partner's key asked for something beyond reading its own records
    (docs/DESIGN.md, "Suspended partners")."""

    code = "PARTNER_SUSPENDED"
    message = "this partner is suspended: its keys may read its own records, nothing else"


class DatabaseUnavailable(ApiError):
    """PostgreSQL cannot be reached (down, restarting, the connection lost): the request
    is answered 503 with ``Retry-After``. A mutation caught by it may or may not have
    been written; retried with the same reference, it is written at most once."""

    code = "DATABASE_UNAVAILABLE"
    message = "the database is unavailable; retry after the time in Retry-After"
    retry_after_seconds = 1


class BadInput(ApiError):
    code = "BAD_USER_INPUT"
    message = "invalid input"


def should_mask(error: GraphQLError) -> bool:
    """Keep our typed errors and GraphQL's own (syntax, validation, coercion of variables,
    all before execution, so without a path); mask what a resolver raised unexpectedly."""
    original = error.original_error
    if original is None or error.path is None:
        return False
    return not isinstance(original, ApiError)
