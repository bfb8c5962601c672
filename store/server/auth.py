"""Who may do what: bearer tokens read from a file, each bound to a tenant.

The file holds one token per line, ``TENANT TOKEN`` (``#`` starts a comment). A tenant's
conversations live in the store under ``TENANT/`` + the id the client gives, so a token
names only its tenant's conversations: another tenant's conversation, or a turn of one, is
a 404, as if it did not exist. Tokens are compared in constant time (their SHA-256 digests,
each compared with ``hmac.compare_digest``, every one of them, whatever matches).

Without a tokens file the service has one anonymous tenant whose ids are the store's own,
and binds to loopback addresses only (``serve.check_bind``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from .problems import Problem

TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Tenant:
    """The caller: its tenant name (None without tokens) and the prefix of its ids."""

    name: str | None

    @property
    def prefix(self) -> str:
        return "" if self.name is None else f"{self.name}/"

    def scoped(self, conversation_id: str) -> str:
        """The store's id of the caller's conversation."""
        return self.prefix + conversation_id

    def owns(self, stored_conversation_id: str) -> bool:
        return stored_conversation_id.startswith(self.prefix)

    def unscoped(self, stored_conversation_id: str) -> str:
        return stored_conversation_id[len(self.prefix) :]


ANONYMOUS = Tenant(None)


class TokenError(ValueError):
    pass


def load_tokens(path: Path) -> list[tuple[bytes, str]]:
    """``(sha256 of the token, tenant)`` for every line of the file."""
    entries: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenError(f"{path}:{number}: expected `TENANT TOKEN`")
        tenant, token = fields
        if not TENANT.match(tenant):
            raise TokenError(f"{path}:{number}: a tenant is 1-64 of A-Z a-z 0-9 _ . -")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenError(f"{path}:{number}: a token needs {MIN_TOKEN_LENGTH}+ characters")
        digest = hashlib.sha256(token.encode()).digest()
        if digest in seen:
            raise TokenError(f"{path}:{number}: the same token twice")
        seen.add(digest)
        entries.append((digest, tenant))
    if not entries:
        raise TokenError(f"{path}: no tokens")
    return entries


class Authenticator:
    def __init__(self, tokens: list[tuple[bytes, str]] | None) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return self.tokens is not None

    def tenant_of(self, authorization: str | None) -> Tenant:
        if self.tokens is None:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send `Authorization: Bearer <token>`")
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: str | None = None
        for known, tenant in self.tokens:  # every entry, whichever matches
            if hmac.compare_digest(known, digest):
                found = tenant
        if found is None:
            raise _unauthorized("unknown token")
        return Tenant(found)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


async def tenant(request: Request) -> Tenant:
    """The FastAPI dependency: the caller's tenant (401 without a valid token). Async: a
    plain function would run in a worker thread, a hop there and back per request."""
    auth: Authenticator = request.app.state.auth
    if auth.tokens is None:
        found = ANONYMOUS
    else:
        found = auth.tenant_of(request.headers.get("authorization"))
    request.scope.setdefault("state", {})["tenant"] = found.name  # request.state.tenant
    return found
