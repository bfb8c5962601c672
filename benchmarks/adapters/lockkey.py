"""A stable signed 64-bit advisory-lock key per conversation (never Python's ``hash()``)."""

from __future__ import annotations

import hashlib

NAMESPACE = b"turnstore-bench:"


def lock_key(conversation_id: str) -> int:
    digest = hashlib.blake2b(NAMESPACE + conversation_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
