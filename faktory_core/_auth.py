"""The password proof Faktory asks for when its greeting carries a salt."""

from __future__ import annotations

import hashlib

__all__ = ["password_hash"]


def password_hash(password: str, salt: str, iterations: int) -> str:
    """Return ``pwdhash``: SHA-256 of password + salt, re-hashed ``iterations`` times in all.

    The salt is used exactly as the server sent it (hex text, not decoded). Like the Go
    client, fewer than one iteration still means one. A password read from ``os.environ``
    may hold undecodable bytes as lone surrogates: those bytes are hashed as they were.
    """
    digest = password.encode("utf-8", "surrogateescape") + salt.encode("utf-8")
    sha256 = hashlib.sha256
    for _ in range(max(iterations, 1)):
        digest = sha256(digest).digest()
    return digest.hex()
