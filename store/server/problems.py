"""Errors as RFC 9457 problem details (``application/problem+json``) carrying the name of
the turnstore error (``error``) and what to do (``detail``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ..errors import (
    ConversationBusy,
    IntegrityViolation,
    InvalidMessage,
    LeaseLost,
    OutcomeUnknown,
    SchemaError,
    StoreError,
    StoreUnavailable,
    TurnFinished,
    TurnNotFound,
)

log = logging.getLogger("turnstore.http")
MEDIA_TYPE = "application/problem+json"

#: status per library error (the first class in the error's MRO that is listed)
STATUS: dict[type[StoreError], int] = {
    InvalidMessage: 422,
    ConversationBusy: 409,  # ConversationInUse too
    LeaseLost: 409,  # TurnTakenOver too
    TurnFinished: 409,  # DuplicateTurnWrite too
    IntegrityViolation: 409,
    TurnNotFound: 404,
    StoreUnavailable: 503,  # WriteNotApplied, OutcomeUnknown
    SchemaError: 503,
}

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Content too large",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(HTTPException):
    """An error answered as a problem: ``status``, the error's name, a detail and any
    extension members."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.error = error
        self.extra = extra


def problem_response(
    status: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {
        "type": f"urn:turnstore:error:{error}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "error": error,
        **extra,
    }
    return Response(orjson.dumps(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def from_store_error(exc: StoreError) -> Response:
    status = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)
    headers = {"Retry-After": "1"} if status == 503 else None
    extra: dict[str, Any] = {}
    if isinstance(exc, OutcomeUnknown):
        extra["outcome"] = "unknown"
    elif isinstance(exc, StoreUnavailable):
        extra["outcome"] = "not_applied"
    return problem_response(status, type(exc).__name__, str(exc), headers, **extra)


def install(app: FastAPI) -> None:
    """Answer every error, ours and the framework's, as a problem."""

    async def store_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StoreError)
        return from_store_error(exc)

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if isinstance(exc, Problem):
            return problem_response(
                exc.status_code, exc.error, str(exc.detail), exc.headers, **exc.extra
            )
        name = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}.get(
            exc.status_code, "HTTPError"
        )
        return problem_response(exc.status_code, name, str(exc.detail), exc.headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else str(first["msg"])
        return problem_response(422, "InvalidRequest", detail, errors=errors)

    async def value_error(request: Request, exc: Exception) -> Response:
        # the library's ValueErrors outside InvalidMessage (an unknown provider, say)
        return problem_response(422, "InvalidRequest", str(exc))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s", request.method, exc_info=exc)
        return problem_response(500, "InternalError", "the server failed; see its log")

    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(HTTPException, problem)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValueError, value_error)
    app.add_exception_handler(Exception, unexpected)


def repeated(model: type[Any], description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 answer of an operation that creates (201), for a request made again."""
    return {200: {"model": model, "description": description}}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problem responses of an operation, for its OpenAPI entry."""
    from .schemas import Problem as ProblemSchema

    return {
        status: {
            "model": ProblemSchema,
            "description": TITLES.get(status, "Error"),
            "content": {MEDIA_TYPE: {}},
        }
        for status in statuses
    }
