"""Secrets at rest: AES-256-GCM under LYSS_ENCRYPTION_KEYS, each value prefixed with its key id; key rotation.

Stored form: `v1:<key id>:<base64url(nonce || ciphertext || tag)>`. The associated data binds a value to
its place (`table.column` and tenant), so a ciphertext copied into another column or tenant does not
decrypt.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Column, Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import KeyRing
from db.session import tenant_session

FORMAT_VERSION = "v1"
_NONCE_BYTES = 12


class DecryptionError(Exception):
    """The value is malformed, was encrypted under an unknown key, or does not belong to this place."""


def _derive(secret: bytes) -> AESGCM:
    # HKDF gives exactly 32 bytes from any configured length, and separates this use from any other use
    # of the same configured secret.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"lyss secrets at rest v1").derive(secret)
    return AESGCM(key)


class SecretBox:
    """Encrypts with the key ring's current key; decrypts with whichever key a value names."""

    def __init__(self, keyring: KeyRing) -> None:
        self.current_key_id = keyring.current.key_id
        self._ciphers = {key.key_id: _derive(key.secret) for key in keyring.keys}

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._ciphers[self.current_key_id].encrypt(nonce, plaintext.encode(), context.encode())
        encoded = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{FORMAT_VERSION}:{self.current_key_id}:{encoded}"

    def decrypt(self, stored: str, *, context: str) -> str:
        version, key_id, encoded = _split(stored)
        cipher = self._ciphers.get(key_id)
        if version != FORMAT_VERSION or cipher is None:
            raise DecryptionError(f"no key '{key_id}' in LYSS_ENCRYPTION_KEYS for a {version} value")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise DecryptionError("the value does not decrypt here (tampered, moved or wrong key)") from None

    def is_current(self, stored: str) -> bool:
        return _split(stored)[1] == self.current_key_id

    def reencrypt(self, stored: str, *, context: str) -> str:
        return self.encrypt(self.decrypt(stored, context=context), context=context)


def _split(stored: str) -> tuple[str, str, str]:
    parts = stored.split(":", 2)
    if len(parts) != 3:
        raise DecryptionError("not an encrypted value")
    return parts[0], parts[1], parts[2]


def secret_context(table: str, column: str, tenant_id: object) -> str:
    """The associated data of a secret column's value: where it lives and whose it is."""
    return f"{table}.{column}:{tenant_id}"


def encrypted_columns() -> list[tuple[Table, Column[str]]]:
    """Every column marked `info={"encrypted": True}` in the models, wherever it lives."""
    from db.models import Base  # the complete metadata, imported late to keep this module light

    return [
        (table, column)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.info.get("encrypted")
    ]


async def reencrypt_secrets(session_maker: async_sessionmaker[AsyncSession], box: SecretBox) -> tuple[int, int]:
    """Re-encrypt every secret not yet under the current key, tenant by tenant (one transaction each).

    Idempotent and resumable: values already under the current key are left alone. Returns
    (tenants visited, values re-encrypted).
    """
    from app.tenants.services import all_tenant_ids

    async with session_maker() as session:
        tenant_ids = await all_tenant_ids(session)
    changed = 0
    for tenant_id in tenant_ids:
        async with tenant_session(session_maker, tenant_id) as session:
            for table, column in encrypted_columns():
                rows = await session.execute(
                    select(table.c.id, column).where(
                        column.is_not(None), column != "", ~column.startswith(f"{FORMAT_VERSION}:{box.current_key_id}:")
                    )
                )
                context = secret_context(table.name, column.name, tenant_id)
                for row_id, stored in rows.all():
                    await session.execute(
                        update(table)
                        .where(table.c.id == row_id)
                        .values({column.name: box.reencrypt(stored, context=context)})
                    )
                    changed += 1
            await session.commit()
    return len(tenant_ids), changed
