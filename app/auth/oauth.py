"""OAuth 2.0 / OpenID Connect client: authorization URLs (state, nonce, PKCE), code exchange, verified identity.

authlib drives the protocol (authorization URL, PKCE challenge, token request); joserfc verifies the
id_token against the provider's JWKS. Provider endpoints come from OIDC discovery (generic OIDC, Google)
or from a preset (GitHub, which speaks plain OAuth 2.0).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

import httpx2
import msgspec
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.auth.oauth_providers import DEFAULT_SCOPES
from app.auth.services import ExternalIdentity
from app.errors import Unauthenticated
from app.settings import Settings
from db.auth import OAuthProvider

# Where providers send users back (the callback route is mounted at this path).
CALLBACK_PATH = "/api/auth/oauth/callback"
GOOGLE_DISCOVERY_URL = "https://accounts.google.com/.well-known/openid-configuration"
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
METADATA_TTL_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 10.0


class ProviderEndpoints(msgspec.Struct, frozen=True):
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None = None
    issuer: str | None = None
    jwks_uri: str | None = None


GITHUB = ProviderEndpoints(
    authorization_endpoint="https://github.com/login/oauth/authorize",
    token_endpoint="https://github.com/login/oauth/access_token",
    userinfo_endpoint="https://api.github.com/user",
)
GITHUB_EMAILS_ENDPOINT = "https://api.github.com/user/emails"


class OAuthFailed(Unauthenticated):
    """The provider refused, or answered something that does not verify."""


def _require_secure(url: str, what: str) -> str:
    """https, or plain http to a loopback address (RFC 8252 section 7.3), and nothing else."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and parts.hostname:
        try:
            if parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback:
                return url
        except ValueError:
            pass
    raise OAuthFailed(f"The provider's {what} must use https.")


def discovery_url_of(provider: OAuthProvider) -> str | None:
    return GOOGLE_DISCOVERY_URL if provider.kind == "google" else provider.discovery_url


class OAuthClient:
    """One per process: caches discovery documents and key sets for an hour."""

    def __init__(self, http: httpx2.AsyncClient) -> None:
        self._http = http
        self._metadata: dict[str, tuple[float, ProviderEndpoints]] = {}
        self._key_sets: dict[str, tuple[float, KeySet]] = {}

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            response = await self._http.get(_require_secure(url, what), timeout=HTTP_TIMEOUT_SECONDS)
            response.raise_for_status()
            return response.json()
        except (httpx2.HTTPError, ValueError) as error:
            raise OAuthFailed(f"The provider's {what} could not be read ({type(error).__name__}).") from None

    async def endpoints(self, provider: OAuthProvider) -> ProviderEndpoints:
        if provider.kind == "github":
            return GITHUB
        url = discovery_url_of(provider)
        if url is None:
            raise OAuthFailed("This provider has no discovery URL.")
        cached = self._metadata.get(url)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        document = await self._get_json(url, "discovery document")
        try:
            endpoints = msgspec.convert(document, ProviderEndpoints)
        except msgspec.ValidationError as error:
            raise OAuthFailed(f"The provider's discovery document is incomplete: {error}.") from None
        if not endpoints.issuer or not endpoints.jwks_uri:
            raise OAuthFailed("The provider's discovery document names no issuer or jwks_uri.")
        _require_secure(endpoints.authorization_endpoint, "authorization endpoint")
        _require_secure(endpoints.token_endpoint, "token endpoint")
        _require_secure(endpoints.jwks_uri, "jwks_uri")
        self._metadata[url] = (time.monotonic() + METADATA_TTL_SECONDS, endpoints)
        return endpoints

    async def authorization_url(
        self, provider: OAuthProvider, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        endpoints = await self.endpoints(provider)
        client = AsyncOAuth2Client(
            client_id=provider.client_id,
            scope=" ".join(provider.scopes or DEFAULT_SCOPES[provider.kind]),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )
        extra = {} if provider.kind == "github" else {"nonce": nonce}
        url, _ = client.create_authorization_url(
            endpoints.authorization_endpoint, state=state, code_verifier=code_verifier, **extra
        )
        return str(url)

    async def identity(
        self,
        provider: OAuthProvider,
        client_secret: str,
        *,
        redirect_uri: str,
        code: str,
        code_verifier: str,
        nonce: str,
    ) -> ExternalIdentity:
        endpoints = await self.endpoints(provider)
        async with AsyncOAuth2Client(
            client_id=provider.client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_SECONDS,
        ) as client:
            try:
                token = await client.fetch_token(
                    endpoints.token_endpoint, code=code, code_verifier=code_verifier, grant_type="authorization_code"
                )
            except OAuthError as error:
                raise OAuthFailed(f"The provider refused the sign-in ({error.error}).") from None
            except (httpx2.HTTPError, ValueError) as error:
                raise OAuthFailed(f"The provider's token endpoint failed ({type(error).__name__}).") from None
            if provider.kind == "github":
                return await _github_identity(client)
            claims = await self._verified_id_token(token.get("id_token"), endpoints, provider.client_id, nonce)
            userinfo: dict[str, Any] = {}
            if endpoints.userinfo_endpoint:
                userinfo = await _fetch_json(client, endpoints.userinfo_endpoint)
                if userinfo.get("sub") != claims["sub"]:
                    raise OAuthFailed("The provider's userinfo is about another subject than its id_token.")
        merged = {**userinfo, **claims}
        return ExternalIdentity(
            subject=str(claims["sub"]),
            email=merged.get("email"),
            email_verified=merged.get("email_verified") is True,
            username=merged.get("preferred_username"),
            name=merged.get("name"),
        )

    async def _key_set(self, jwks_uri: str, *, refresh: bool = False) -> KeySet:
        cached = self._key_sets.get(jwks_uri)
        if cached and cached[0] > time.monotonic() and not refresh:
            return cached[1]
        try:
            key_set = KeySet.import_key_set(await self._get_json(jwks_uri, "JWKS"))
        except (JoseError, ValueError, TypeError):
            raise OAuthFailed("The provider's JWKS holds no usable key.") from None
        self._key_sets[jwks_uri] = (time.monotonic() + METADATA_TTL_SECONDS, key_set)
        return key_set

    async def _verified_id_token(
        self, id_token: object, endpoints: ProviderEndpoints, client_id: str, nonce: str
    ) -> dict[str, Any]:
        if not isinstance(id_token, str) or endpoints.jwks_uri is None:
            raise OAuthFailed("The provider returned no id_token.")
        registry = jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": endpoints.issuer or ""},
            aud={"essential": True, "value": client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        for refresh in (False, True):  # a key the cached set lacks may be a rotated-in key: fetch once more
            try:
                decoded = jwt.decode(id_token, await self._key_set(endpoints.jwks_uri, refresh=refresh),
                                     algorithms=ID_TOKEN_ALGORITHMS)  # fmt: skip
                break
            except (JoseError, ValueError):
                if refresh:
                    raise OAuthFailed("The id_token's signature does not verify with the provider's keys.") from None
        try:
            registry.validate(decoded.claims)
        except JoseError as error:
            raise OAuthFailed(f"The id_token is not valid for this sign-in ({error.error}).") from None
        audience = decoded.claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and decoded.claims.get("azp") != client_id:
            raise OAuthFailed("The id_token was issued to another client.")
        return dict(decoded.claims)


async def _fetch_json(client: AsyncOAuth2Client, url: str) -> Any:
    try:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except (httpx2.HTTPError, ValueError) as error:
        raise OAuthFailed(f"The provider's user endpoint failed ({type(error).__name__}).") from None


async def _github_identity(client: AsyncOAuth2Client) -> ExternalIdentity:
    user = await _fetch_json(client, GITHUB.userinfo_endpoint or "")
    emails = await _fetch_json(client, GITHUB_EMAILS_ENDPOINT)
    primary = next((entry for entry in emails if entry.get("primary") and entry.get("verified")), None)
    return ExternalIdentity(
        subject=str(user["id"]),
        email=primary["email"] if primary else None,
        email_verified=primary is not None,
        username=user.get("login"),
        name=user.get("name"),
    )


def oauth_redirect_uri(settings: Settings) -> str:
    """Where providers send users back: what an admin registers at the provider."""
    return settings.public_url + CALLBACK_PATH
