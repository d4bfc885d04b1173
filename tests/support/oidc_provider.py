"""A real OpenID Connect provider on loopback, for the tests: discovery, authorize, token, JWKS, userinfo.

It checks what a strict provider checks (client, redirect URI, PKCE S256, one use per code, code
lifetime) and can be told to misbehave: sign with a key it does not publish, put a different nonce in
the id_token, or let codes expire at once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


class MockOidcProvider:
    def __init__(self, *, client_id: str = "lyss-test-client", client_secret: str = "idp-client-secret") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.signing_key = RSAKey.generate_key(2048, parameters={"kid": "idp-key-1"})
        # Same kid, different key: what an attacker forging id_tokens would use.
        self.rogue_key = RSAKey.generate_key(2048, parameters={"kid": "idp-key-1"})
        self.user: dict[str, Any] = {
            "sub": "idp-user-1",
            "email": "someone@example.com",
            "email_verified": True,
            "name": "Some One",
            "preferred_username": "someone",
        }
        self.code_lifetime_seconds = 60
        self.sign_with_rogue_key = False
        self.nonce_override: str | None = None
        self.token_requests: list[dict[str, str]] = []
        self._codes: dict[str, dict[str, Any]] = {}
        self._access_tokens: dict[str, dict[str, Any]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        # stop() waits for the serving loop to look up: every 50 ms rather than the default half second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- protocol -----------------------------------------------------------------------------------

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return 400, {}, {"error": "invalid_request"}
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, {}, {"error": "invalid_request", "error_description": "PKCE S256 required"}
        code = secrets.token_urlsafe(16)
        self._codes[code] = {
            "redirect_uri": query["redirect_uri"],
            "challenge": query["code_challenge"],
            "nonce": query.get("nonce"),
            "issued": time.time(),
            "user": dict(self.user),
        }
        location = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, {"Location": location}, None

    def _client_authenticated(self, headers: Any, form: dict[str, str]) -> bool:
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and secret == self.client_secret

    def _token(self, headers: Any, form: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        self.token_requests.append(form)
        if not self._client_authenticated(headers, form):
            return 401, {}, {"error": "invalid_client"}
        grant = self._codes.pop(form.get("code", ""), None)  # a code works once
        if grant is None or time.time() - grant["issued"] > self.code_lifetime_seconds:
            return 400, {}, {"error": "invalid_grant", "error_description": "unknown, used or expired code"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).decode().rstrip("=") != grant["challenge"]:
            return 400, {}, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = grant["user"]
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": grant["user"]["sub"],
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce_override or grant["nonce"],
            "email": grant["user"]["email"],
            "email_verified": grant["user"]["email_verified"],
        }
        key = self.rogue_key if self.sign_with_rogue_key else self.signing_key
        id_token = jwt.encode({"alg": "RS256", "kid": "idp-key-1"}, claims, key)
        body = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        return 200, {}, body

    def _userinfo(self, headers: Any) -> tuple[int, dict[str, str], Any]:
        user = self._access_tokens.get(headers.get("Authorization", "").removeprefix("Bearer "))
        return (200, {}, user) if user else (401, {}, {"error": "invalid_token"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _reply(self, status: int, headers: dict[str, str], body: Any) -> None:
                payload = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._reply(200, {}, provider._discovery())
                elif url.path == "/jwks":
                    self._reply(200, {}, {"keys": [provider.signing_key.as_dict(private=False)]})
                elif url.path == "/authorize":
                    self._reply(*provider._authorize(query))
                elif url.path == "/userinfo":
                    self._reply(*provider._userinfo(self.headers))
                else:
                    self._reply(404, {}, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {key: values[0] for key, values in parse_qs(self.rfile.read(length).decode()).items()}
                if urlsplit(self.path).path == "/token":
                    self._reply(*provider._token(self.headers, form))
                else:
                    self._reply(404, {}, {"error": "not_found"})

        return Handler
