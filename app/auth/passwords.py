"""Password hashing (argon2id) and the rules a new password must meet."""

from __future__ import annotations

from argon2 import PasswordHasher

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 hashes anything, but a megabyte "password" is a denial of service

password_hasher = PasswordHasher()  # argon2id with argon2-cffi's current recommended parameters


class WeakPasswordError(ValueError):
    """The password breaks a rule; the message says which."""


def check_new_password(password: str) -> None:
    if not password:
        raise WeakPasswordError("the password is empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")


def hash_password(password: str) -> str:
    check_new_password(password)
    return password_hasher.hash(password)
