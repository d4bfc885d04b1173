"""Secret columns are declared encrypted, and a ciphertext only decrypts in its own place."""

from __future__ import annotations

import pytest

from app.encryption import DecryptionError, SecretBox, encrypted_columns
from app.settings import new_key_entry, parse_keyring


def test_every_secret_column_is_declared_encrypted() -> None:
    assert {f"{table.name}.{column.name}" for table, column in encrypted_columns()} == {
        "auth_users.mfa_secret",
        "auth_oauth_providers.encrypted_client_secret",
        "provider_channels.encrypted_keys",
        "tenant_webhook_endpoints.encrypted_secret",
    }


def test_a_ciphertext_moved_to_another_tenant_or_column_does_not_decrypt() -> None:
    box = SecretBox(parse_keyring(new_key_entry(), "LYSS_ENCRYPTION_KEYS"))
    stored = box.encrypt("s3cret", context="auth_oauth_providers.encrypted_client_secret:tenant-a")
    for context in ("auth_oauth_providers.encrypted_client_secret:tenant-b", "auth_users.mfa_secret:tenant-a"):
        with pytest.raises(DecryptionError):
            box.decrypt(stored, context=context)
    tampered = stored[:-2] + ("A" if stored[-2] != "A" else "B") + stored[-1]
    with pytest.raises(DecryptionError):
        box.decrypt(tampered, context="auth_oauth_providers.encrypted_client_secret:tenant-a")
