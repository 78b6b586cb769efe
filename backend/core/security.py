"""Passwords (argon2), opaque bearer tokens stored hashed, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "hash_password",
    "dummy_password_hash",
    "verify_password",
    "new_token",
    "hash_token",
    "csrf_token_for",
    "TOKEN_PREFIX",
]

TOKEN_PREFIX = "atv_"
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@lru_cache(maxsize=1)
def dummy_password_hash() -> str:
    """An argon2 hash of a random password, made once per process.

    Logins of unknown users verify against it, so they take as long as real ones.
    """
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A random bearer token; only its hash is stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_for(session_token: str, secret: bytes) -> str:
    """The CSRF token bound to one session (double-submit, signed so it cannot be forged)."""
    return hmac.new(secret, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()
