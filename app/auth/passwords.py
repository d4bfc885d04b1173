"""Password hashing (argon2id, rehashed when the parameters change) and the rules a new password must meet."""

from __future__ import annotations

import asyncio
import functools
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 hashes anything, but a megabyte "password" is a denial of service
_COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

password_hasher = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters


class WeakPasswordError(ValueError):
    """The password breaks a rule; the message says which."""


@functools.cache
def _common_passwords() -> frozenset[str]:
    lines = _COMMON_PASSWORDS_FILE.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _normalized(password: str) -> str:
    return "".join(password.lower().split())


def check_new_password(password: str, *, email: str | None = None) -> None:
    if not password:
        raise WeakPasswordError("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")
    normalized = _normalized(password)
    if normalized in _common_passwords() or len(set(normalized)) <= 2:
        raise WeakPasswordError("the password is too common or too simple; choose a longer, less usual one")
    if email and (normalized == email.lower() or normalized == email.lower().split("@")[0]):
        raise WeakPasswordError("the password must not be the email address")


# argon2id is meant to take a tenth of a second of CPU: it runs in a worker thread (argon2-cffi releases
# the GIL), so the event loop keeps serving other requests meanwhile.


async def hash_password(password: str, *, email: str | None = None) -> str:
    """Hash a new password, after checking it against the rules."""
    check_new_password(password, email=email)
    return await asyncio.to_thread(password_hasher.hash, password)


async def rehash_password(password: str) -> str:
    """Hash an existing, just verified password under the current parameters (no rule check: it is in use)."""
    return await asyncio.to_thread(password_hasher.hash, password)


def _verify(hashed: str, password: str) -> bool:
    try:
        return password_hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(hashed: str, password: str) -> bool:
    return await asyncio.to_thread(_verify, hashed, password)


def needs_rehash(hashed: str) -> bool:
    return password_hasher.check_needs_rehash(hashed)


@functools.cache
def _decoy_hash() -> str:
    return password_hasher.hash(secrets.token_urlsafe(24))


async def spend_verification_time(password: str) -> None:
    """Verify against a decoy hash, so that an unknown account costs as much time as a wrong password."""
    await asyncio.to_thread(_verify, _decoy_hash(), password)
