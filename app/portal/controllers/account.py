"""The signed-in person's own account: password change, two-factor enrolment, turning it off, recovery codes."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery
from litestar.response import Response, Template
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.passwords import MIN_PASSWORD_LENGTH
from app.auth.schemas import MfaConfirmRequest, MfaDisableRequest, PasswordChangeRequest
from app.auth.services import AuthService, MfaEnrollment
from app.portal.forms import FormSubmission, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_viewer, see_other

PASSWORD_FIELDS = ("current_password", "new_password")
DONE_NOTICES = {
    "password": "Your password is changed. Your other sessions have been signed out.",
    "mfa-off": "Two-factor authentication is off.",
}


def _account_page(
    viewer: Viewer,
    *,
    form: str | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    notice: str | None = None,
) -> Template:
    """The account page; `form` names the form `errors` belong to, so each message lands next to its field."""
    return page(
        viewer,
        "account.html",
        status_code=status_code,
        form=form,
        errors=errors or {},
        notice=notice,
        min_password_length=MIN_PASSWORD_LENGTH,
    )


def _enrolment_page(viewer: Viewer, enrollment: MfaEnrollment | None, errors: dict[str, str], status: int) -> Template:
    # segno writes this SVG from the otpauth URI; nothing in it comes from the user as markup.
    qr = Markup(enrollment.qr_svg) if enrollment else None  # noqa: S704
    secret = enrollment.secret if enrollment else None
    return page(viewer, "mfa_enroll.html", status_code=status, secret=secret, qr=qr, errors=errors)


async def _fields(request: PortalRequest, names: tuple[str, ...]) -> dict[str, Any]:
    form = await request.form()
    # Passwords are taken as typed (spaces included); codes are trimmed.
    return {
        name: str(form.get(name) or "") if "password" in name else str(form.get(name) or "").strip() for name in names
    }


class AccountPages(Controller):
    path = "/account"
    dependencies = {"viewer": Provide(provide_viewer)}

    @get("/", summary="Your account")
    async def account(self, viewer: NamedDependency[Viewer], done: FromQuery[str | None] = None) -> Template:
        # `done` only picks one of these fixed messages: nothing from the query string reaches the page.
        return _account_page(viewer, notice=DONE_NOTICES.get(done or ""))

    @post("/password", summary="Change your password")
    async def change_password(
        self,
        request: PortalRequest,
        viewer: NamedDependency[Viewer],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        async with FormSubmission(db_session) as submission:
            data = parse(PasswordChangeRequest, await _fields(request, PASSWORD_FIELDS))
            await auth.change_password(
                viewer.principal, current_password=data.current_password, new_password=data.new_password
            )
        if submission.refused:
            return _account_page(viewer, form="password", errors=submission.errors, status_code=submission.status_code)
        return see_other(f"{PORTAL}/account?done=password")

    @post("/mfa", summary="Start two-factor enrolment")
    async def start_mfa(
        self,
        viewer: NamedDependency[Viewer],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        return _enrolment_page(viewer, await auth.start_mfa_enrollment(viewer.principal), {}, 200)

    @post("/mfa/confirm", summary="Turn two-factor on")
    async def confirm_mfa(
        self,
        request: PortalRequest,
        viewer: NamedDependency[Viewer],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        async with FormSubmission(db_session) as submission:
            data = parse(MfaConfirmRequest, await _fields(request, ("code",)))
            codes = await auth.confirm_mfa(viewer.principal, data.code)
        if submission.refused:
            # The key and its QR code stay on screen: the next code from the same app can be tried.
            enrollment = await auth.pending_mfa_enrollment(viewer.principal)
            return _enrolment_page(viewer, enrollment, submission.errors, submission.status_code)
        return page(viewer, "recovery_codes.html", codes=codes, done_href=f"{PORTAL}/account", done_label="Done")

    @post("/mfa/disable", summary="Turn two-factor off")
    async def disable_mfa(
        self,
        request: PortalRequest,
        viewer: NamedDependency[Viewer],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        async with FormSubmission(db_session) as submission:
            data = parse(MfaDisableRequest, await _fields(request, ("password", "code")))
            await auth.disable_mfa(viewer.principal, password=data.password, code=data.code)
        if submission.refused:
            return _account_page(viewer, form="mfa_off", errors=submission.errors, status_code=submission.status_code)
        return see_other(f"{PORTAL}/account?done=mfa-off")

    @post("/mfa/recovery-codes", summary="Replace your recovery codes")
    async def regenerate_recovery_codes(
        self,
        request: PortalRequest,
        viewer: NamedDependency[Viewer],
        auth: NamedDependency[AuthService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        async with FormSubmission(db_session) as submission:
            data = parse(MfaConfirmRequest, await _fields(request, ("code",)))
            codes = await auth.regenerate_recovery_codes(viewer.principal, code=data.code)
        if submission.refused:
            return _account_page(viewer, form="recovery", errors=submission.errors, status_code=submission.status_code)
        return page(
            viewer,
            "recovery_codes.html",
            codes=codes,
            replaced=True,
            done_href=f"{PORTAL}/account",
            done_label="Done",
        )
