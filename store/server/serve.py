"""``python -m store serve``: run the service with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import socket
import sys
from pathlib import Path

from ..cli_errors import CommandError

MiB = 1024 * 1024

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": MiB,
    "gi": 1024**3,
}


def size(text: str) -> int:
    """``4MiB``, ``20MB``, ``512k``, ``1048576``: a size in bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 4MiB, 20MB, 65536)")
    unit = (match[2] or "").lower().rstrip("b")
    return int(float(match[1]) * _UNITS[unit])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="database URL (postgresql://... or sqlite:///...)")
    p.add_argument("--schema", default=None, help="PostgreSQL schema (default: public)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    p.add_argument(
        "--tokens",
        type=Path,
        default=None,
        help="file of `TENANT TOKEN` lines: bearer tokens, each bound to a tenant. Without "
        "it the service binds to loopback addresses only",
    )
    d = argparse.Namespace(max_request_bytes=8 * MiB, max_message_bytes=4 * MiB, body_timeout=30.0)
    p.add_argument(
        "--max-request-bytes",
        type=size,
        default=d.max_request_bytes,
        help="largest request body (default 8MiB; 413 above)",
    )
    p.add_argument(
        "--max-message-bytes",
        type=size,
        default=d.max_message_bytes,
        help="largest message: a user or assistant message, a call's arguments, "
        "a result (default 4MiB; 413 above). 8 images of 2 MB of base64 need "
        "about 17MB",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout,
        help="seconds a client has to send its request body (default 30; 408)",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="how long a silent turn keeps its conversation (default 30)",
    )
    p.add_argument(
        "--busy-timeout",
        type=float,
        default=30.0,
        help="default wait for a busy conversation (default 30)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="longest wait a request may ask for: busy or long poll (default 60)",
    )
    p.add_argument("--pool-size", type=int, default=10, help="database connections")
    p.add_argument(
        "--no-migrate",
        action="store_true",
        help="refuse to start on a schema that is not current instead of migrating",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_bind(host: str, tokens: Path | None) -> None:
    """Without tokens, anyone who reaches the port reads and writes every conversation:
    only a loopback address is allowed then."""
    if tokens is None and not is_loopback(host):
        raise CommandError(
            f"refusing to serve on {host} without --tokens: anyone who reaches it could read "
            "and write every conversation. Give a tokens file, or bind to 127.0.0.1"
        )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .app import ServiceConfig, create_app
        from .auth import TokenError, load_tokens
        from .limits import Limits
    except ModuleNotFoundError as exc:
        raise CommandError(
            f"the service needs {exc.name!r}: pip install 'turnstore[server]'"
        ) from exc
    check_bind(args.host, args.tokens)
    tokens = None
    if args.tokens is not None:
        try:
            tokens = load_tokens(args.tokens)
        except (OSError, TokenError) as exc:
            raise CommandError(f"--tokens: {exc}") from exc
        if args.tokens.stat().st_mode & 0o077:
            print(f"warning: {args.tokens} is readable by other users", file=sys.stderr)
    config = ServiceConfig(
        db=args.db,
        schema=args.schema,
        tokens=tokens,
        limits=Limits(args.max_request_bytes, args.max_message_bytes, args.body_timeout),
        lease_seconds=args.lease_seconds,
        busy_timeout=args.busy_timeout,
        max_wait=args.max_wait,
        pool_size=args.pool_size,
        migrate=not args.no_migrate,
        tune_gc=True,
    )
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,  # ours (turnstore.http.access) leaves ids out
        loop="auto",  # uvloop (the server extra has it)
        http="auto",  # httptools (the server extra has it)
        timeout_keep_alive=30,
        server_header=False,
    )
    return 0
