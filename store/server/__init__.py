"""``python -m store serve``: turnstore as an HTTP service (FastAPI on uvicorn), for agent
runtimes in any language. See docs/http.md. Needs the ``server`` extra
(``pip install 'turnstore[server]'``); ``create_app`` and ``ServiceConfig`` are in
``store.server.app`` (imported on first use, so that the command line works without it)."""

from __future__ import annotations

from typing import Any

__all__ = ["ServiceConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
