"""The OpenID provider the OAuth tests sign in through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.oidc_provider import MockOidcProvider


@pytest.fixture
def idp() -> Iterator[MockOidcProvider]:
    provider = MockOidcProvider()
    provider.start()
    yield provider
    provider.stop()
