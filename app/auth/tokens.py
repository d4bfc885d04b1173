"""Tokens: access JWTs and MFA tickets (HS256 under LYSS_JWT_KEYS), opaque tenant-prefixed tokens, CSRF values."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from uuid import UUID

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

from app.settings import KeyRing

ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "access"
MFA_TICKET_TYPE = "mfa"
SCOPE_FULL = "full"
# An admin whose tenant requires MFA and who has none yet may only enrol.
SCOPE_MFA_ENROLLMENT = "mfa_enrollment"

_ACCESS_CLAIMS = jwt.JWTClaimsRegistry(
    sub={"essential": True},
    tid={"essential": True},
    role={"essential": True},
    sid={"essential": True},
    scp={"essential": True, "values": [SCOPE_FULL, SCOPE_MFA_ENROLLMENT]},
    typ={"essential": True, "value": ACCESS_TOKEN_TYPE},
    exp={"essential": True},
)
_MFA_TICKET_CLAIMS = jwt.JWTClaimsRegistry(
    sub={"essential": True},
    tid={"essential": True},
    jti={"essential": True},
    mode={"essential": True},
    typ={"essential": True, "value": MFA_TICKET_TYPE},
    exp={"essential": True},
)


class InvalidToken(Exception):
    """The token is malformed, badly signed, expired or of the wrong type."""


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the user, their tenant and role, the login (session family) and what it may do."""

    user_id: UUID
    tenant_id: UUID
    role: str
    session_id: UUID
    scope: str = SCOPE_FULL


class MfaTicket(msgspec.Struct, frozen=True):
    """Proof that the password step succeeded; exchanged once, with a code, for a session."""

    user_id: UUID
    tenant_id: UUID
    ticket_id: str
    mode: str
    expires_at: int


@functools.cache  # one key ring per process; importing the keys is a tenth of a request's CPU
def _key_set(keyring: KeyRing) -> KeySet:
    return KeySet([OctKey.import_key(key.secret, {"kid": key.key_id}) for key in keyring.keys])


def _sign(keyring: KeyRing, claims: dict[str, object]) -> str:
    key = keyring.current
    return jwt.encode({"alg": ALGORITHM, "kid": key.key_id}, claims, OctKey.import_key(key.secret, {"kid": key.key_id}))


def _decode(keyring: KeyRing, token: str, registry: jwt.JWTClaimsRegistry) -> dict[str, object]:
    """Accept a token signed with any key of the ring (the previous key keeps working during rotation)."""
    try:
        decoded = jwt.decode(token, _key_set(keyring), algorithms=[ALGORITHM])
        registry.validate(decoded.claims)
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidToken(str(error)) from None
    return decoded.claims


def issue_access_token(keyring: KeyRing, principal: Principal, ttl_seconds: int) -> str:
    now = int(time.time())
    return _sign(
        keyring,
        {
            "sub": str(principal.user_id),
            "tid": str(principal.tenant_id),
            "role": principal.role,
            "sid": str(principal.session_id),
            "scp": principal.scope,
            "typ": ACCESS_TOKEN_TYPE,
            "iat": now,
            "exp": now + ttl_seconds,
        },
    )


def verify_access_token(keyring: KeyRing, token: str) -> Principal:
    claims = _decode(keyring, token, _ACCESS_CLAIMS)
    try:
        return Principal(
            user_id=UUID(str(claims["sub"])),
            tenant_id=UUID(str(claims["tid"])),
            role=str(claims["role"]),
            session_id=UUID(str(claims["sid"])),
            scope=str(claims["scp"]),
        )
    except ValueError as error:
        raise InvalidToken(str(error)) from None


def issue_mfa_ticket(keyring: KeyRing, *, user_id: UUID, tenant_id: UUID, mode: str, ttl_seconds: int) -> str:
    now = int(time.time())
    return _sign(
        keyring,
        {
            "sub": str(user_id),
            "tid": str(tenant_id),
            "jti": secrets.token_urlsafe(16),
            "mode": mode,
            "typ": MFA_TICKET_TYPE,
            "iat": now,
            "exp": now + ttl_seconds,
        },
    )


def verify_mfa_ticket(keyring: KeyRing, ticket: str) -> MfaTicket:
    claims = _decode(keyring, ticket, _MFA_TICKET_CLAIMS)
    try:
        return MfaTicket(
            user_id=UUID(str(claims["sub"])),
            tenant_id=UUID(str(claims["tid"])),
            ticket_id=str(claims["jti"]),
            mode=str(claims["mode"]),
            expires_at=int(str(claims["exp"])),
        )
    except ValueError as error:
        raise InvalidToken(str(error)) from None


# Opaque tokens (refresh tokens, portal session cookies, invitations) are `<kind>_<tenant hex>_<secret>`:
# the tenant part is not secret, it only says where to look the hash up, under that tenant's RLS.


def new_opaque_token(kind: str, tenant_id: UUID) -> str:
    return f"{kind}_{tenant_id.hex}_{secrets.token_urlsafe(32)}"


def opaque_token_tenant(kind: str, token: str) -> UUID | None:
    prefix, _, rest = token.partition("_")
    tenant_hex, _, secret = rest.partition("_")
    if prefix != kind or len(tenant_hex) != 32 or not secret:
        return None
    try:
        return UUID(hex=tenant_hex)
    except ValueError:
        return None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(keyring: KeyRing, session_token: str) -> str:
    """The CSRF value of a portal session: derived from the session, so nothing more is stored."""
    return _csrf(keyring.current.secret, session_token)


def csrf_token_matches(keyring: KeyRing, session_token: str, presented: str) -> bool:
    return any(hmac.compare_digest(_csrf(key.secret, session_token), presented) for key in keyring.keys)


def _csrf(secret: bytes, session_token: str) -> str:
    return hmac.new(secret, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()
