"""Password reset links: an administrator issues one from a user's page, the user opens it to set a password."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.passwords import MIN_PASSWORD_LENGTH
from app.auth.schemas import PasswordResetRequest
from app.auth.services import AuthService
from app.errors import ServiceError
from app.portal.forms import FormSubmission, parse
from app.portal.web import PUBLIC_PAGE, PortalRequest, Viewer, page, provide_admin_viewer
from app.tenants.accounts import AccountService

# The link's token is in the path, unguessable: a forged cross-site post would need it, so the public form
# needs no other CSRF token. The page is never cached (it names the account); signed-in pages never are.
PUBLIC = {PUBLIC_PAGE: True}
NO_STORE = {"cache-control": "no-store"}


def _reset_page(
    *, email: str | None, errors: dict[str, str] | None = None, status_code: int = 200, done: bool = False
) -> Template:
    template = page(
        None,
        "password_reset.html",
        status_code=status_code,
        email=email,
        errors=errors or {},
        done=done,
        min_password_length=MIN_PASSWORD_LENGTH,
    )
    template.headers.update(NO_STORE)
    return template


class PasswordResetPages(Controller):
    path = "/"

    @get("/reset/{reset_token:str}", opt=PUBLIC, summary="Set a new password with a reset link")
    async def reset_page(
        self, reset_token: FromPath[str], auth: NamedDependency[AuthService], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        try:
            email = await auth.password_reset_email(reset_token)
        except ServiceError as refused:
            return _reset_page(email=None, errors={"form": refused.detail}, status_code=refused.status_code)
        return _reset_page(email=email)

    @post("/reset/{reset_token:str}", opt=PUBLIC, summary="Set the new password")
    async def reset(
        self,
        reset_token: FromPath[str],
        request: PortalRequest,
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        form = await request.form()
        async with FormSubmission(db_session) as submission:
            data = parse(PasswordResetRequest, {"new_password": str(form.get("new_password") or "")})
            user = await auth.reset_password(token=reset_token, new_password=data.new_password)
        if not submission.refused:
            return _reset_page(email=user.email, done=True)
        if "new_password" not in submission.errors:
            # The link itself is refused (unknown, expired, used): no form to fill in again.
            return _reset_page(email=None, errors=submission.errors, status_code=submission.status_code)
        try:
            email = await auth.password_reset_email(reset_token)
        except ServiceError as refused:
            return _reset_page(email=None, errors={"form": refused.detail}, status_code=refused.status_code)
        return _reset_page(email=email, errors=submission.errors, status_code=submission.status_code)

    @post(
        "/users/{user_id:uuid}/password-reset",
        dependencies={"viewer": Provide(provide_admin_viewer)},
        summary="Issue a password reset link for a user",
    )
    async def issue(
        self,
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        issued = await accounts.issue_password_reset(viewer.principal, user_id)
        return page(viewer, "users/password_reset_issued.html", issued=issued)
