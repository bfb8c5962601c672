"""The application factory: ``create_app(ServiceConfig(...))`` is an ASGI app (a FastAPI
app with the access log, the body limits and the turn operations' fast path in front) that
opens its store when it starts and closes it when it stops."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import StoreConfig
from ..messages import Limits as MessageLimits
from ..store import Store
from . import conversations, problems, turns
from .auth import Authenticator
from .common import ServiceState
from .fastpath import FastPath
from .limits import BodyLimits, Limits
from .live import LiveTurns

access_log = logging.getLogger("turnstore.http.access")
#: the collector's thresholds in the service's process (Python's: 700, 10, 10): a young
#: collection every 10,000 allocations rather than 700 (a request makes thousands)
_GC_THRESHOLDS = (10_000, 20, 20)
VERSION = "1"


@dataclass(frozen=True)
class ServiceConfig:
    db: str
    schema: str | None = None
    tokens: list[tuple[bytes, str]] | None = None
    limits: Limits = field(default_factory=Limits)
    lease_seconds: float = 30.0
    busy_timeout: float = 30.0
    max_wait: float = 60.0
    pool_size: int = 10
    migrate: bool = True
    live_turns: int = 10_000
    #: serve a turn's operations without FastAPI's per-request machinery (``fastpath``);
    #: off: FastAPI serves every request (the tests compare the two)
    fast_path: bool = True
    #: once started, leave the objects made so far (modules, the app, the store) out of the
    #: garbage collector's passes, and collect less often: its passes were ~10% of the
    #: service's CPU (perf), ~0.1% after. For the service's own process (``python -m store
    #: serve``), not for an app inside another program
    tune_gc: bool = False


class AccessLog:
    """One line per request at INFO: method, route template, status, time — never the
    path's ids, a header or a body (no token, conversation id or message text). At DEBUG
    the path itself too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                template = getattr(route, "path", None) or "(no route)"
                ms = (time.perf_counter() - started) * 1000
                access_log.info("%s %s %d %.1fms", scope["method"], template, status, ms)
                if access_log.isEnabledFor(logging.DEBUG):
                    access_log.debug("path %s", scope.get("path"))


def create_app(config: ServiceConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.open(
            config.db,
            schema=config.schema,
            migrate=config.migrate,
            pool_size=config.pool_size,
            config=StoreConfig(
                lease_seconds=config.lease_seconds,
                busy_timeout=config.busy_timeout,
                limits=MessageLimits(max_message_bytes=config.limits.max_message_bytes),
            ),
        )
        app.state.service = ServiceState(
            store=store,
            live=LiveTurns(store, config.live_turns),
            auth=app.state.auth,
            limits=config.limits,
            busy_timeout=config.busy_timeout,
            max_wait=config.max_wait,
        )
        if config.tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(*_GC_THRESHOLDS)
        try:
            yield
        finally:
            await store.close()

    app = _Service(
        title="turnstore",
        version=VERSION,
        summary="A transactional conversation store for LLM agent runtimes, over HTTP.",
        description="Atomic tool steps, one turn at a time per conversation, idempotent "
        "submits, replay every provider accepts. Errors are RFC 9457 problem details "
        "(application/problem+json) whose `error` names the turnstore error.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.auth = Authenticator(config.tokens)
    for router in (turns.router, conversations.router, conversations.health_router):
        app.include_router(router)
    problems.install(app)
    inner: ASGIApp = app.inner
    if config.fast_path:
        inner = FastPath(inner, routes=turns.router.routes, api=app)
    app.front = AccessLog(BodyLimits(inner, limits=config.limits))
    app.openapi = lambda: _openapi(app, secured=config.tokens is not None)  # type: ignore[method-assign]
    return app


class _Service(FastAPI):
    """The service's FastAPI app, with the access log, the body limits and the turn
    operations' fast path in front of it (``front``: HTTP requests go through them, then
    to FastAPI itself unless the fast path answered): ahead of FastAPI's own layers
    (its telemetry check, ServerErrorMiddleware, ...), which a request the fast path serves
    does not need (see ``fastpath``)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and scope["type"] == "http":
            await front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself."""
        await super().__call__(scope, receive, send)


def _openapi(app: FastAPI, *, secured: bool) -> dict[str, Any]:
    """FastAPI's document, with every error response as application/problem+json and,
    when tokens are required, the bearer scheme on every operation but the health check."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {problems.MEDIA_TYPE: problem}
            operation["responses"].setdefault(
                "500",
                {"description": "Internal server error", "content": {problems.MEDIA_TYPE: problem}},
            )
            if secured and path != "/v1/health":
                operation["security"] = [{"bearer": []}]
    if secured:
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
    app.openapi_schema = doc
    return doc
