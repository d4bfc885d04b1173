"""Password rules and hashing."""

from __future__ import annotations

import asyncio

import pytest

from app.auth.passwords import (
    WeakPasswordError,
    check_new_password,
    hash_password,
    needs_rehash,
    password_hasher,
    verify_password,
)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "empty"),
        ("short pass", "at least 12"),
        ("Password1234", "too common"),
        ("qwerty 123456", "too common"),
        ("abababababababab", "too common or too simple"),
        ("x" * 1025, "at most 1024"),
        ("someone.long@example.com", "must not be the email"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, problem: str) -> None:
    with pytest.raises(WeakPasswordError, match=problem):
        check_new_password(password, email="someone.long@example.com")


async def test_hashes_are_argon2id_and_verify() -> None:
    hashed = await hash_password("a perfectly fine passphrase")
    assert hashed.startswith("$argon2id$")
    assert await verify_password(hashed, "a perfectly fine passphrase")
    assert not await verify_password(hashed, "a perfectly fine passphrasE")
    assert not await verify_password("not a hash at all", "anything")
    assert not needs_rehash(hashed)


async def test_verification_leaves_the_event_loop_free() -> None:
    # argon2 takes ~0.1 s of CPU by design; run on the loop, it would stall every other request.
    hashed = password_hasher.hash("a perfectly fine passphrase")
    ticks = 0
    finished = False

    async def count_ticks() -> None:
        nonlocal ticks
        while not finished:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(count_ticks())
    await verify_password(hashed, "a perfectly fine passphrase")
    finished = True
    await ticker
    assert ticks > 50
