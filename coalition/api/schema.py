"""The schema, with its limits: depth, tokens and aliases bounded, each document parsed
and validated once per process (``trusted.PreparedDocuments``), introspection and field
suggestions only in development, unexpected errors masked, every argument checked
(``coalition.api.inputs``) before its resolver runs, and a document of several operations
run only when the request names one."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import strawberry
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    SchemaExtension,
)
from strawberry.extensions.max_aliases import create_validator as create_alias_validator
from strawberry.extensions.query_depth_limiter import (
    create_validator as create_depth_validator,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import validate_document
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from coalition.api import inputs
from coalition.api.errors import BadInput, Unauthenticated, should_mask
from coalition.api.event_stream import EventSubscription
from coalition.api.mutation import Mutation
from coalition.api.query import Query
from coalition.api.results import REFUSALS
from coalition.api.trusted import PreparedDocuments
from coalition.api.types import LONG_SCALAR, Long
from coalition.api.webhooks_api import WebhookMutation, WebhookQuery
from coalition.outcomes import RefusalCode
from graphql import (
    GraphQLError,
    GraphQLNonNull,
    GraphQLResolveInfo,
    GraphQLUnionType,
    OperationDefinitionNode,
)

_log = logging.getLogger("coalition.api")
DEPTH_MAX = 8
TOKENS_MAX = 2_000
ALIASES_MAX = 15


_LIMIT_RULES = (
    create_depth_validator(DEPTH_MAX, None, None),
    create_alias_validator(ALIASES_MAX),
)


_INVALID_REQUEST = REFUSALS[RefusalCode.INVALID_REQUEST]
_SUGGESTION = re.compile(r"\s*Did you mean\b.*\Z", re.DOTALL)
SEVERAL_OPERATIONS = "operationName is required when the document has several operations"


class _ArgumentsChecked(SchemaExtension):
    """Every field's arguments meet ``coalition.api.inputs`` before its resolver runs, or
    the field answers without running it: the union refusal ``InvalidRequest`` where the
    field's result has one, else a ``BAD_USER_INPUT`` error; both name the argument."""

    def resolve(
        self,
        _next: Callable[..., Any],
        root: Any,
        info: GraphQLResolveInfo[Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if kwargs and (problem := inputs.problem(kwargs)) is not None:
            if getattr(info.context, "principal", None) is None:
                raise Unauthenticated()  # who is asking comes first, as in the resolvers
            result = info.return_type
            if isinstance(result, GraphQLNonNull):
                result = result.of_type
            if isinstance(result, GraphQLUnionType) and any(
                t.name == _INVALID_REQUEST.__name__ for t in result.types
            ):
                return _INVALID_REQUEST(code=RefusalCode.INVALID_REQUEST, message=problem)
            raise BadInput(problem)
        return _next(root, info, *args, **kwargs)


_PREPARED = PreparedDocuments()  # per process: each document parsed and validated once


class _Prepared(SchemaExtension):
    """Parse each document once per process (within ``TOKENS_MAX`` tokens) and validate
    it once per set of rules — the schema's, the limits' (depth, aliases) and, outside
    development, introspection's — through ``PreparedDocuments``. One extension where
    strawberry's would take four (the rules, the token limit, the parser and validation
    caches), each with hooks to run on every request."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = (*context.validation_rules, *_LIMIT_RULES)
        context.parse_options["max_tokens"] = TOKENS_MAX
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None:
            context.graphql_document = _PREPARED.parsed(context.query, **context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            schema, rules = context.schema._schema, context.validation_rules
            context.pre_execution_errors = _PREPARED.errors(
                document, rules, lambda: validate_document(schema, document, rules)
            )
        yield


class _OneOperationNamed(SchemaExtension):
    """A document of several operations runs only the one the request names (GraphQL
    spec, GetOperation); strawberry would otherwise run the first. Listed after the
    validation cache, which sets the validation errors this adds to."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        operations = (
            []
            if document is None
            else [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        )
        if len(operations) > 1 and context._provided_operation_name is None:
            error = GraphQLError(SEVERAL_OPERATIONS, extensions={"code": "BAD_REQUEST"})
            context.pre_execution_errors = [*(context.pre_execution_errors or ()), error]
        yield


class _NoSuggestions(SchemaExtension):
    """Outside development, errors do not suggest names ("Did you mean 'me'?"): they
    would tell a caller the schema that introspection keeps from it."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [_without_suggestion(e) for e in errors]


def _without_suggestion(error: GraphQLError) -> GraphQLError:
    message = _SUGGESTION.sub("", error.message)
    if message == error.message:
        return error
    return GraphQLError(  # a new error: the validation cache keeps the original
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error,
        extensions=error.extensions,
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
    # limits' validation rules are built once, at import, so that the prepared documents
    # (validation keyed by the rules) hit; they live at module level, one set per process.
    extensions: list[Any] = [
        *extra_extensions,
        _Prepared,
        _OneOperationNamed,
        _ArgumentsChecked,
        lambda: MaskErrors(should_mask_error=should_mask, error_message="internal error"),
    ]
    if not development:
        extensions += [DisableIntrospection, _NoSuggestions]
    return _Schema(
        query=merge_types("Query", (Query, WebhookQuery)),
        mutation=merge_types("Mutation", (Mutation, WebhookMutation)),
        subscription=EventSubscription,
        types=list(REFUSALS.values()),
        extensions=extensions,
        scalar_overrides={Long: LONG_SCALAR},
        config=StrawberryConfig(auto_camel_case=True),
    )
