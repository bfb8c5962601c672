"""Limits that fit real traffic, and slow clients that hold nothing.

* A request body over ``max_request_bytes`` is a 413 before it is read (Content-Length) or
  as soon as it passes the limit; a message (a user message, an assistant message, a call's
  arguments, a result) over ``max_message_bytes`` is a 413 before anything is written.
* A body that does not arrive within ``body_timeout`` seconds is a 408: a client that
  trickles its body holds a task, never a database connection (the service reads the
  whole body before it touches the database, and builds each response in memory before
  sending it, so a slow reader holds none either).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import Problem, problem_response

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_bytes: int = 8 * MiB
    max_message_bytes: int = 4 * MiB
    body_timeout: float = 30.0


class BodyLimits:
    """ASGI middleware: the request-size limit and the body deadline."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_request_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._drain(receive, declared)
                    await _too_large(limit)(scope, receive, send)
                    return
        # asyncio's clock and timeouts (the service runs on uvicorn's asyncio loop): anyio's
        # cost more than a whole request's parsing, on every request
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout
        body_done = False
        received = 0

        async def limited_receive() -> Message:
            # Raised here, inside the framework's body reading, a Problem is answered by the
            # app's handler like any other.
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise Problem(
                    408,
                    "RequestTimeout",
                    f"the request body did not arrive within {self.limits.body_timeout:g}s",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    if not body_done:
                        await self._drain(receive, limit)
                    raise _too_large_problem(limit)
            return message

        await self.app(scope, limited_receive, send)

    async def _drain(self, receive: Receive, size: int) -> None:
        """Read and drop the rest of a body refused for its size (up to 4 times the limit,
        within the body deadline), so that a client that sends its whole body before it
        reads the answer gets the 413 rather than a reset connection."""
        budget = 4 * self.limits.max_request_bytes
        if size > budget:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.limits.body_timeout):
                while budget > 0:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    budget -= len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return


def _too_large_problem(limit: int) -> Problem:
    return Problem(
        413,
        "RequestTooLarge",
        f"the request body is over the limit of {limit} bytes (--max-request-bytes)",
        headers={"Connection": "close"},
    )


def _too_large(limit: int) -> Any:
    problem = _too_large_problem(limit)
    return problem_response(413, problem.error, str(problem.detail), problem.headers)


def check_message(value: Any, what: str, limit: int) -> None:
    """413 for a message (a JSON value as it will be stored) over ``limit`` bytes."""
    if isinstance(value, str):
        # its text part's frame: 40 bytes; an ASCII string's length is its size in UTF-8
        size = (len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))) + 40
    else:
        try:
            size = len(orjson.dumps(value))
        except (TypeError, orjson.JSONEncodeError):
            return  # the library refuses what cannot be encoded (422)
    if size > limit:
        raise Problem(
            413,
            "MessageTooLarge",
            f"{what}: {size} bytes is over the limit of {limit} (--max-message-bytes); "
            "nothing was written",
        )


def check_messages(items: Iterable[tuple[Any, str]], limit: int) -> None:
    for value, what in items:
        check_message(value, what, limit)
