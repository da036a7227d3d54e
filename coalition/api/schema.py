"""The schema, with its limits: depth, tokens and aliases bounded, parser and validation
caches on, introspection only in development, unexpected errors masked."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as create_alias_validator
from strawberry.extensions.query_depth_limiter import (
    create_validator as create_depth_validator,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from coalition.api.errors import should_mask
from coalition.api.mutation import Mutation
from coalition.api.query import Query
from coalition.api.results import REFUSALS
from coalition.api.types import LONG_SCALAR, Long
from graphql import GraphQLError

_log = logging.getLogger("coalition.api")
DEPTH_MAX = 8
TOKENS_MAX = 2_000
ALIASES_MAX = 15


_LIMIT_RULES = (
    create_depth_validator(DEPTH_MAX, None, None),
    create_alias_validator(ALIASES_MAX),
)


class _Schema(strawberry.Schema):
    """Logs what clients never see in full — unexpected errors, with their traceback and
    (via the log formatter) the request id — and not the expected, typed ones."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if should_mask(error):
                _log.error("unexpected error in %s", error.path, exc_info=error.original_error)


def build_schema(*, development: bool, extra_extensions: tuple[Any, ...] = ()) -> strawberry.Schema:
    # Factories, not instances: strawberry builds fresh extensions for each request. The
    # limits' validation rules are built once, here, so that the validation cache (keyed
    # by the rules) hits; the parser and validation caches live at module level.
    extensions: list[Any] = [
        *extra_extensions,
        lambda: AddValidationRules(list(_LIMIT_RULES)),
        lambda: MaxTokensLimiter(max_token_count=TOKENS_MAX),
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        lambda: MaskErrors(should_mask_error=should_mask, error_message="internal error"),
    ]
    if not development:
        extensions.append(DisableIntrospection)
    return _Schema(
        query=Query,
        mutation=Mutation,
        types=list(REFUSALS.values()),
        extensions=extensions,
        scalar_overrides={Long: LONG_SCALAR},
        config=StrawberryConfig(auto_camel_case=True),
    )
