"""Request and response bodies of the auth domain."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from app.schemas import Input

# Bounds on every free-text field: enough for real values, small enough that nothing is a payload.
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=255)]
Password = Annotated[str, msgspec.Meta(max_length=1024)]
Slug = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Code = Annotated[str, msgspec.Meta(min_length=6, max_length=32)]
Token = Annotated[str, msgspec.Meta(min_length=10, max_length=2048)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class LoginRequest(Input):
    tenant: Slug
    email: Email
    password: Password
    # "api": bearer access + refresh tokens in the body. "portal": an HttpOnly session cookie.
    session: Literal["api", "portal"] = "api"


class MfaLoginRequest(Input):
    mfa_ticket: Token
    code: Code | None = None
    recovery_code: Code | None = None


class RefreshRequest(Input):
    refresh_token: Token


class LoginResponse(msgspec.Struct, omit_defaults=True):
    """`status` says what comes next: nothing, an MFA code (with `mfa_ticket`), or MFA enrolment."""

    status: Literal["authenticated", "mfa_required", "mfa_enrollment_required"]
    token_type: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    expires_in: int | None = None
    scope: str | None = None
    csrf_token: str | None = None
    mfa_ticket: str | None = None


class TokenResponse(msgspec.Struct):
    token_type: str
    access_token: str
    refresh_token: str
    expires_in: int


class LogoutEverywhereResponse(msgspec.Struct):
    sessions_ended: int


class PasswordChangeRequest(Input):
    current_password: Password
    new_password: Password


class MfaEnrollmentResponse(msgspec.Struct):
    secret: str
    otpauth_uri: str
    qr_svg: str


class MfaConfirmRequest(Input):
    code: Code


class RecoveryCodesResponse(msgspec.Struct):
    recovery_codes: list[str]


class MfaDisableRequest(Input):
    password: Password
    code: Code


class InvitationRequest(Input):
    email: Email
    role: Literal["end_user", "tenant_admin", "super_admin"] = "end_user"


class InvitationResponse(msgspec.Struct):
    """`token` is shown once: hand it to the invitee, who accepts with it."""

    id: UUID
    email: str
    role: str
    expires_at: datetime.datetime
    token: str


class AcceptInvitationRequest(Input):
    token: Token
    password: Password
    full_name: Name | None = None


class SignUpRequest(Input):
    tenant: Slug
    email: Email
    password: Password
    full_name: Name | None = None


class OAuthProviderCreate(Input):
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,48}$")]
    kind: Literal["oidc", "github", "google"]
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    client_secret: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    discovery_url: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    scopes: list[Annotated[str, msgspec.Meta(max_length=100)]] | None = None


class OAuthProviderUpdate(Input):
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None
    client_secret: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None
    discovery_url: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    display_name: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    scopes: list[Annotated[str, msgspec.Meta(max_length=100)]] | None = None
    is_enabled: bool | None = None


class OAuthProviderRead(msgspec.Struct):
    """A provider as admins see it: never the client secret."""

    id: UUID
    name: str
    kind: str
    display_name: str | None
    client_id: str
    discovery_url: str | None
    redirect_uri: str
    scopes: list[str]
    is_enabled: bool


class OAuthProviderPublic(msgspec.Struct):
    """What the sign-in page needs to draw a button."""

    name: str
    kind: str
    display_name: str | None
    authorize_path: str


class OAuthLinkRequest(Input):
    provider: Annotated[str, msgspec.Meta(max_length=50)]


class OAuthLinkResponse(msgspec.Struct):
    authorization_url: str


class OAuthConnectionRead(msgspec.Struct):
    id: UUID
    provider: str
    external_email: str | None
    external_username: str | None
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None


class PasswordResetRequest(Input):
    new_password: Password
