"""Short-lived access JWTs (HS256, signed with the current key of LYSS_JWT_KEYS) and the principal they carry."""

from __future__ import annotations

import functools
import time
from uuid import UUID

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from app.settings import KeyRing

ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a claim value, not a secret
_CLAIMS = jwt.JWTClaimsRegistry(
    sub={"essential": True},
    tid={"essential": True},
    role={"essential": True},
    typ={"essential": True, "value": ACCESS_TOKEN_TYPE},
    exp={"essential": True},
)


class InvalidAccessToken(Exception):
    """The token is malformed, badly signed, expired or of the wrong type."""


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the user, their tenant and their role."""

    user_id: UUID
    tenant_id: UUID
    role: str


@functools.cache  # one key ring per process; importing the keys is a tenth of a request's CPU
def _key_set(keyring: KeyRing) -> KeySet:
    return KeySet([OctKey.import_key(key.secret, {"kid": key.key_id}) for key in keyring.keys])


def issue_access_token(keyring: KeyRing, principal: Principal, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {
        "sub": str(principal.user_id),
        "tid": str(principal.tenant_id),
        "role": principal.role,
        "typ": ACCESS_TOKEN_TYPE,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    key = keyring.current
    return jwt.encode({"alg": ALGORITHM, "kid": key.key_id}, claims, OctKey.import_key(key.secret, {"kid": key.key_id}))


def verify_access_token(keyring: KeyRing, token: str) -> Principal:
    """Accept a token signed with any key of the ring (the previous key keeps working during rotation)."""
    try:
        decoded = jwt.decode(token, _key_set(keyring), algorithms=[ALGORITHM])
        _CLAIMS.validate(decoded.claims)
        return Principal(
            user_id=UUID(decoded.claims["sub"]),
            tenant_id=UUID(decoded.claims["tid"]),
            role=str(decoded.claims["role"]),
        )
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidAccessToken(str(error)) from None
