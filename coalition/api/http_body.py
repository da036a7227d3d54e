"""The GraphQL request as it arrives over HTTP: a JSON body that is not UTF-8, not JSON,
nested too deep, or not one request object (a scalar, a list, fields of the wrong type)
is answered 400, in GraphQL-over-HTTP form, before anything runs::

    {"errors": [{"message": "...", "extensions": {"code": "BAD_REQUEST"}}]}

Strawberry's own refusals (an unsupported content type, a method other than GET and
POST, GraphiQL outside development) come back in that form too, with their status.
"""

from __future__ import annotations

import json
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type

JSON_DEPTH_MAX = 32  # a request is {"variables": {"member": {...}}}: 3 levels
_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
_FIELDS: dict[str, tuple[type, ...]] = {
    "query": (str, type(None)),
    "operationName": (str, type(None)),
    "variables": (dict, type(None)),
    "extensions": (dict, type(None)),
}


def error_response(status: int, message: str) -> Response:
    code = _CODES.get(status, "BAD_REQUEST")
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status)


def decode_json(data: str | bytes) -> Any:
    """JSON text (a body, or a GET parameter) as a value, or HTTPException 400."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the request body is not UTF-8") from None
    try:
        value = json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise HTTPException(400, "the request body is not JSON") from None
    # Nesting needs an opening bracket per level: a text with few cannot nest too deep
    # (brackets inside strings only count extra), so most bodies are not walked.
    if data.count("{") + data.count("[") > JSON_DEPTH_MAX and _depth(value) > JSON_DEPTH_MAX:
        raise _too_deep()
    return value


def request_data(data: Any) -> GraphQLRequestData:
    """One GraphQL request from a decoded JSON body, or HTTPException 400."""
    if isinstance(data, list):
        raise HTTPException(400, "batched requests are not supported: send one object")
    if not isinstance(data, dict):
        raise HTTPException(
            400, 'the request body is a JSON object: {"query": ..., "variables": {...}}'
        )
    for name, types in _FIELDS.items():
        if not isinstance(data.get(name), types):
            kind = "a string" if str in types else "an object"
            raise HTTPException(400, f"{name} must be {kind} or null")
    return GraphQLRequestData(
        query=data.get("query"),
        variables=data.get("variables"),
        operation_name=data.get("operationName"),
        extensions=data.get("extensions"),
    )


class JsonRequests:
    """Mixed into strawberry's ASGI ``GraphQL`` view (before it, so its methods win)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # type: ignore[misc]
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))  # type: ignore[attr-defined]
        except HTTPException as exc:
            response = error_response(exc.status_code, exc.reason)
        await response(scope, receive, send)

    def decode_json(self, data: str | bytes) -> object:
        return decode_json(data)

    async def parse_http_body(self, request: Any) -> Any:
        content_type, _ = parse_content_type(request.content_type or "")
        if request.method == "POST" and "application/json" in content_type:
            return request_data(decode_json(await request.get_body()))
        return await super().parse_http_body(request)  # type: ignore[misc]


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN and Infinity otherwise


def _too_deep() -> HTTPException:
    return HTTPException(400, f"the request body nests deeper than {JSON_DEPTH_MAX} levels")


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > JSON_DEPTH_MAX:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest
