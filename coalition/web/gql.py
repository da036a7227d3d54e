"""Run a GraphQL document in-process, as a signed-in principal: the pages' one way to the
data. The document goes through the same schema, resolvers and checks as ``/graphql``,
so a page can show nothing and do nothing the principal's API key could not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import strawberry

from coalition.api.context import ApiContext
from coalition.api.observability import request_id_var
from coalition.api_keys import Principal

# extensions.code → HTTP status of the page that ran into it
_STATUS = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "BAD_USER_INPUT": 400,
    "DATABASE_UNAVAILABLE": 503,
}


class PageError(Exception):
    """A page cannot be shown: its status and what to tell the person (and what to do)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Runner:
    schema: strawberry.Schema
    state: dict[str, Any]

    def context(self, principal: Principal) -> ApiContext:
        s = self.state
        return ApiContext(
            principal=principal,
            database=s["database"],
            coalition=s["coalition"],
            tills=s["tills"],
            signer=s["signer"],
            settings=s["settings"],
            request_id=request_id_var.get(),
            api_keys=s["api_keys"],
        )

    async def run(
        self, principal: Principal, document: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The data, or PageError carrying the first error's status and message."""
        result = await self.schema.execute(
            document, variable_values=variables or {}, context_value=self.context(principal)
        )
        if result.errors:
            error = result.errors[0]
            code = (error.extensions or {}).get("code", "")
            status = _STATUS.get(code, 500 if error.path else 400)
            message = error.message if status != 500 else "internal error (see the server log)"
            raise PageError(status, message)
        assert result.data is not None
        return result.data
