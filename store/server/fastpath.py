"""The hot operations without FastAPI's per-request machinery, answering exactly as FastAPI
would.

A turn's requests (begin, events, steps, finish, fail, interrupt, heartbeat, its state,
long poll, usage) are most of what the service serves, and FastAPI spent about as much CPU
on each of them as the store did (routing through every route, an endpoint context and
exit stacks per request, content-type parsing with ``email.message``, dependencies solved
one parameter at a time, its telemetry check and error layers). This ASGI middleware, in
front of the FastAPI app (``app._Service``), serves them itself, with FastAPI's own pieces:

* the route is matched on its path's segments (no root path, no trailing slash);
* every parameter is validated by the route's own FastAPI fields (``ModelField.validate``,
  the same pydantic validators, constraints and defaults), the body parsed by orjson as
  the routes' ``JsonRequest`` does; the dependencies (``tenant``, ``state``) are the same
  functions, the endpoint the same function;
* an error the endpoint raises is answered by the app's own exception handlers, looked up
  along the error's MRO as Starlette's ExceptionMiddleware does; an unexpected one gets
  the ``Exception`` handler's 500 problem and is raised on, as ServerErrorMiddleware does.

Anything else is served by FastAPI itself, from the start: a request whose parameters,
body, content type or token are not plainly valid (a header given twice, a query parameter
the operation does not take, a body that is not JSON or not ``application/json``, a
missing or bad token, a value a field refuses) is handed to the app with its body
replayed, so every refusal is FastAPI's own answer, word for word; and every request while
FastAPI's own OpenTelemetry is on (a provider configured), so that its spans and metrics
cover them all. It runs inside ``BodyLimits`` and ``AccessLog``: the size limits, the body
deadline and the access log (its route template from ``scope["route"]``) apply as before.
The OpenAPI document is FastAPI's, unchanged. ``tests/test_http_fastpath.py`` sends one
script of valid and invalid requests to the app with and without it and compares.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_JSON = "application/json"
_NOT_PARSED = HTTPException(status_code=400, detail="There was an error parsing the body")


class _Fallback(Exception):
    """The request is not plainly valid: FastAPI answers it."""


@dataclass(frozen=True)
class _Field:
    name: str  # the endpoint's parameter
    key: str  # where it is: the header (lower case) or query parameter name
    field: Any  # FastAPI's ModelField
    loc: tuple[str, ...]
    #: a path, header or query value validated before, and its value (a turn's requests
    #: carry the same turn id and epoch): validation is a function of the text alone
    seen: dict[str, Any] = dc_field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _Operation:
    route: APIRoute
    segments: tuple[str | None, ...]  # None: a path parameter
    path: tuple[_Field, ...]
    headers: tuple[_Field, ...]
    query: tuple[_Field, ...]
    body: _Field | None
    dependencies: tuple[tuple[str, Callable[[Request], Any]], ...]
    request_param: str | None


def _operation(route: APIRoute) -> _Operation | None:
    """The fast form of ``route``, if it is one it can serve (None: FastAPI serves it)."""
    d = route.dependant
    if (
        route.methods is None
        or len(route.methods) != 1
        or d.cookie_params
        or len(d.body_params) > 1
        or d.response_param_name
        or d.background_tasks_param_name
        or d.security_scopes_param_name
        or d.websocket_param_name
        or d.http_connection_param_name
        or not _default(route.response_class)
        or not inspect.iscoroutinefunction(route.endpoint)
        # the endpoint builds its answer (no response model to validate and serialize)
        or inspect.signature(route.endpoint).return_annotation not in ("Response", Response)
    ):
        return None
    dependencies = []
    for sub in d.dependencies:
        call = sub.call
        if (
            sub.name is None
            or call is None
            or not inspect.iscoroutinefunction(call)
            or sub.dependencies
            or sub.path_params
            or sub.query_params
            or sub.header_params
            or sub.cookie_params
            or sub.body_params
            or sub.request_param_name is None
        ):
            return None
        dependencies.append((sub.name, call))
    segments: list[str | None] = []
    names = {f.alias: f for f in d.path_params}
    path = []
    for part in route.path_format.split("/"):
        if part.startswith("{") and part.endswith("}"):
            field = names.pop(part[1:-1], None)
            if field is None:
                return None
            segments.append(None)
            path.append(_Field(field.name, field.alias, field, ("path", field.alias)))
        elif "{" in part or "}" in part:
            return None
        else:
            segments.append(part)
    if names:
        return None
    headers = tuple(
        _Field(f.name, f.alias.lower(), f, ("header", f.alias)) for f in d.header_params
    )
    query = tuple(_Field(f.name, f.alias, f, ("query", f.alias)) for f in d.query_params)
    body = None
    if d.body_params:
        f = d.body_params[0]
        if getattr(route, "_embed_body_fields", True):
            return None  # validated under ("body", name): not the one form served here
        body = _Field(f.name, "", f, ("body",))
    return _Operation(
        route=route,
        segments=tuple(segments),
        path=tuple(path),
        headers=headers,
        query=query,
        body=body,
        dependencies=tuple(dependencies),
        request_param=d.request_param_name,
    )


def _default(response_class: Any) -> bool:
    from fastapi.datastructures import DefaultPlaceholder

    return isinstance(response_class, DefaultPlaceholder)


class FastPath:
    """ASGI middleware: the operations of ``routes`` that it can serve (see the module)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], api: FastAPI) -> None:
        self.app = app
        self.api = api
        #: requests served here, and handed to FastAPI after a match (counts, for the tests)
        self.served = 0
        self.handed_over = 0
        telemetry = getattr(api, "_native_telemetry", None)  # FastAPI's, from 0.13x on
        self._telemetry_enabled: Callable[[], bool] | None = getattr(telemetry, "enabled", None)
        self._telemetry = False
        self._telemetry_checked_at = -1e9
        # (method, segments) -> the operations of that shape: the positions of their
        # fixed segments, and the operation by those segments' text
        self.shapes: dict[tuple[str, int], list[tuple[tuple[int, ...], dict[Any, _Operation]]]] = {}
        for route in routes:
            if not isinstance(route, APIRoute):
                continue
            op = _operation(route)
            if op is not None and route.methods is not None:
                fixed = tuple(i for i, segment in enumerate(op.segments) if segment is not None)
                shapes = self.shapes.setdefault((next(iter(route.methods)), len(op.segments)), [])
                table = next((t for f, t in shapes if f == fixed), None)
                if table is None:
                    table = {}
                    shapes.append((fixed, table))
                table[tuple(op.segments[i] for i in fixed)] = op

    def _match(self, scope: Scope) -> tuple[_Operation, list[str]] | None:
        if scope.get("root_path"):
            return None
        parts = scope["path"].split("/")
        for fixed, table in self.shapes.get((scope["method"], len(parts)), ()):
            op = table.get(tuple(parts[i] for i in fixed))
            if op is not None:
                return op, [p for p, segment in zip(parts, op.segments, strict=True)
                            if segment is None]  # fmt: skip
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._telemetry_on():
            await self.app(scope, receive, send)
            return
        matched = self._match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        op, path_values = matched
        scope["app"] = self.api  # as Starlette sets it: the request's app
        body: bytes | None = None
        try:
            kwargs = self._parameters(op, scope, path_values)
            if op.body is not None:
                body = await self._read_body(receive)
                kwargs[op.body.name] = self._body(op, scope, body)
            request = Request(scope, receive)
            for name, call in op.dependencies:
                try:
                    kwargs[name] = await call(request)
                except HTTPException:
                    raise _Fallback from None  # a refused token: FastAPI answers it
        except _Fallback:
            self.handed_over += 1
            await self.app(scope, _replay(body, receive) if body is not None else receive, send)
            return
        except Exception as exc:  # reading the body: a limit, the deadline
            await self._answer_error(exc, scope, receive, send)
            return
        self.served += 1
        scope["route"] = op.route
        scope["endpoint"] = op.route.endpoint
        scope["path_params"] = {f.key: v for f, v in zip(op.path, path_values, strict=True)}
        if op.request_param is not None:
            kwargs[op.request_param] = request
        try:
            response = await op.route.endpoint(**kwargs)
            if not isinstance(response, Response):
                raise TypeError(f"{op.route.name} answered {type(response).__name__}")
        except Exception as exc:
            await self._answer_error(exc, scope, receive, send)
            return
        await response(scope, receive, send)

    def _telemetry_on(self) -> bool:
        """Whether FastAPI's own OpenTelemetry is on (a provider configured): then FastAPI
        serves every request, so that its spans and metrics cover them all. Looked up once
        a second (it reads the providers and the environment)."""
        enabled = self._telemetry_enabled
        if enabled is None:
            return False
        now = time.monotonic()
        if now >= self._telemetry_checked_at + 1.0:
            self._telemetry_checked_at = now
            self._telemetry = bool(enabled())
        return self._telemetry

    def _parameters(self, op: _Operation, scope: Scope, path: list[str]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for f, raw in zip(op.path, path, strict=True):
            kwargs[f.name] = _valid_text(f, raw)
        if op.headers:
            found: dict[str, str] = {}
            wanted = {f.key for f in op.headers}
            for name, value in scope["headers"]:
                key = name.decode("latin-1").lower()
                if key in wanted:
                    if key in found:
                        raise _Fallback  # given twice
                    found[key] = value.decode("latin-1")
            for f in op.headers:
                kwargs[f.name] = _valid_text(f, found[f.key]) if f.key in found else _missing(f)
        query = scope.get("query_string", b"")
        if query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            names = {f.key for f in op.query}
            if len({k for k, _ in pairs}) != len(pairs) or any(k not in names for k, _ in pairs):
                raise _Fallback  # repeated, or one the operation does not take
            given = dict(pairs)
        else:
            given = {}
        for f in op.query:
            kwargs[f.name] = _valid_text(f, given[f.key]) if f.key in given else _missing(f)
        return kwargs

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        chunks = []
        while True:
            message = await receive()  # BodyLimits' receive: a Problem past a limit
            if message["type"] != "http.request":
                raise _NOT_PARSED  # the client went away: as Starlette's request.body()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _body(op: _Operation, scope: Scope, body: bytes) -> Any:
        assert op.body is not None
        if not body:
            return _missing(op.body)
        content_type = None
        for name, value in scope["headers"]:
            if name.lower() == b"content-type":
                if content_type is not None:
                    raise _Fallback
                content_type = value.decode("latin-1")
        if content_type is None or content_type.split(";", 1)[0].strip().lower() != _JSON:
            raise _Fallback
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Fallback from None
        return _valid(op.body, value)

    async def _answer_error(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer as FastAPI's layers would: the app's handler for the first class of the
        error's MRO that has one, as Starlette's ExceptionMiddleware looks it up; else, as
        ServerErrorMiddleware does, the handler for ``Exception`` answers (a 500 problem)
        and the error is raised on, for the server to log."""
        handlers = self.api.exception_handlers
        handler = None
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            handler = handlers.get(cls)
            if handler is not None:
                break
        if handler is not None:
            response = await _answer(handler, Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        handler = handlers.get(500) or handlers.get(Exception)
        if handler is not None:
            response = await _answer(handler, Request(scope, receive), exc)
            await response(scope, receive, send)
        raise exc


async def _answer(
    handler: Callable[[Request, Exception], Response | Awaitable[Response]],
    request: Request,
    exc: Exception,
) -> Response:
    """An exception handler's response (Starlette lets a handler be a plain function)."""
    response = handler(request, exc)
    if inspect.isawaitable(response):
        return await response
    return response


def _valid(f: _Field, raw: Any) -> Any:
    value, errors = f.field.validate(raw, {}, loc=f.loc)
    if errors:
        raise _Fallback
    return value


def _valid_text(f: _Field, raw: str) -> Any:
    """``_valid`` for a parameter's text, remembered (a bounded number of texts)."""
    seen = f.seen
    try:
        return seen[raw]
    except KeyError:
        pass
    value = _valid(f, raw)
    if isinstance(value, str | int | float | None):  # immutable: safe to hand out again
        if len(seen) >= 4096:
            seen.clear()
        seen[raw] = value
    return value


def _missing(f: _Field) -> Any:
    info = f.field.field_info
    if info.is_required() or info.validate_default:
        raise _Fallback
    return copy.deepcopy(f.field.default)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request's receive, its body (read already) given again first."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
