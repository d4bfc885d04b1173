"""Portal pages for people (admins): users and their usage, invitations, roles, deactivation, MFA reset; groups."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Response, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.schemas import Email
from app.gateway.admin import MonthlyUsage, usage_this_month
from app.portal.budget_forms import budget_form, submit_budget
from app.portal.forms import FormSubmission, parse
from app.portal.web import PORTAL, PortalRequest, Viewer, page, provide_admin_viewer, see_other, viewer_actor
from app.settings import Settings
from app.tenants.accounts import INVITATION_TTL, AccountService, join_path, pending_invitations
from app.tenants.budgets import BudgetService
from app.tenants.groups import GroupService
from app.tenants.schemas import GroupCreate, MemberAdd, RoleChange, TenantRole
from app.tenants.services import (
    group_members,
    group_names_of_user,
    groups_with_member_counts,
    organization_user,
    organization_users,
    user_group,
)

ROLES = [("end_user", "End user"), ("tenant_admin", "Administrator")]
ROLE_LABELS = dict(ROLES) | {"super_admin": "Super admin"}


class InviteForm(msgspec.Struct, frozen=True):
    email: Email
    role: TenantRole


def _invitation_link_page(
    viewer: Viewer, settings: Settings, invitation: Any, token: str, *, reissued: bool = False
) -> Template:
    # Shown in this response only (no redirect, `no-store`): Lyss keeps just the token's hash.
    return page(
        viewer,
        "users/invited.html",
        invitation=invitation,
        link=settings.public_url + join_path(token),
        reissued=reissued,
        role_labels=ROLE_LABELS,
    )


class UserPages(Controller):
    path = "/users"
    dependencies = {"viewer": Provide(provide_admin_viewer)}

    @get("/", summary="Users")
    async def list_users(self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]) -> Template:
        now = datetime.datetime.now(datetime.UTC)
        users = await organization_users(db_session)
        invitations = await pending_invitations(db_session, now)
        return page(
            viewer,
            "users/list.html",
            users=users,
            usage=await usage_this_month(db_session, now),
            invitations=invitations,
            month=now.strftime("%B"),
            role_labels=ROLE_LABELS,
        )

    def _invite_page(
        self,
        viewer: Viewer,
        values: dict[str, str],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        return page(
            viewer,
            "users/invite.html",
            status_code=status_code if errors else 200,
            roles=ROLES,
            valid_days=INVITATION_TTL.days,
            values=values,
            errors=errors or {},
        )

    @get("/invite", summary="Invite a user")
    async def new_invitation(self, viewer: NamedDependency[Viewer]) -> Template:
        return self._invite_page(viewer, {"role": "end_user"})

    @post("/invite", summary="Invite a user")
    async def invite(
        self,
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template:
        form = await request.form()
        values = {name: str(form.get(name) or "").strip() for name in ("email", "role")}
        async with FormSubmission(db_session) as submission:
            data = parse(InviteForm, values)
            invitation, token = await accounts.invite(viewer.principal, email=data.email, role=data.role)
        if submission.refused:
            return self._invite_page(viewer, values, submission.errors, submission.status_code)
        return _invitation_link_page(viewer, settings, invitation, token)

    @post("/invitations/{invitation_id:uuid}/reissue", summary="Re-issue an invitation: a new link, the old one dies")
    async def reissue_invitation(
        self,
        invitation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        invitation, token = await accounts.reissue_invitation(viewer.principal, invitation_id)
        return _invitation_link_page(viewer, settings, invitation, token, reissued=True)

    @post("/invitations/{invitation_id:uuid}/revoke", summary="Revoke an invitation")
    async def revoke_invitation(
        self,
        invitation_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[None]:
        await accounts.revoke_invitation(viewer.principal, invitation_id)
        return see_other(f"{PORTAL}/users")

    async def _user_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        user_id: UUID,
        *,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        user = await organization_user(db_session, user_id)
        groups = await group_names_of_user(db_session, user.id)
        usage = await usage_this_month(db_session, datetime.datetime.now(datetime.UTC), user_id=user.id)
        budget = await budget_form(db_session, "user", user.id, viewer.organization.currency)
        return page(
            viewer,
            "users/detail.html",
            status_code=status_code if errors else 200,
            user=user,
            is_self=user.id == viewer.user.id,
            groups=groups,
            usage=usage.get(user.id, MonthlyUsage()),
            roles=ROLES,
            role_labels=ROLE_LABELS,
            budget=budget,
            values={"role": user.role} | budget.values | (values or {}),
            errors=errors or {},
        )

    @get("/{user_id:uuid}", summary="A user")
    async def show_user(
        self, user_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return await self._user_page(viewer, db_session, user_id)

    @post("/{user_id:uuid}/budget", summary="Set a user's budget and policy")
    async def set_budget(
        self,
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        budgets: NamedDependency[BudgetService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        values, submission = await submit_budget(request, viewer, budgets, db_session, "user", user_id)
        if submission.refused:
            return await self._user_page(
                viewer, db_session, user_id, values=values, errors=submission.errors, status_code=submission.status_code
            )
        return see_other(f"{PORTAL}/users/{user_id}#budget", "budget_saved")

    @post("/{user_id:uuid}/role", summary="Change a user's role")
    async def change_role(
        self,
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        values = {"role": str((await request.form()).get("role") or "").strip()}
        async with FormSubmission(db_session) as submission:
            await accounts.change_role(viewer.principal, user_id, parse(RoleChange, values).role)
        if submission.refused:
            return await self._user_page(
                viewer, db_session, user_id, values=values, errors=submission.errors, status_code=submission.status_code
            )
        return see_other(f"{PORTAL}/users/{user_id}", "role_saved")

    async def _apply_account_change(
        self, viewer: Viewer, db_session: AsyncSession, user_id: UUID, change: Awaitable[object], notice: str
    ) -> Template | Response[None]:
        """Make an account change, then back to the user's page; if a service refuses it, that page with the
        reason (nothing saved)."""
        async with FormSubmission(db_session) as submission:
            await change
        if submission.refused:
            return await self._user_page(
                viewer, db_session, user_id, errors=submission.errors, status_code=submission.status_code
            )
        return see_other(f"{PORTAL}/users/{user_id}", notice)

    @post("/{user_id:uuid}/deactivate", summary="Deactivate a user")
    async def deactivate(
        self,
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        return await self._apply_account_change(
            viewer, db_session, user_id, accounts.deactivate(viewer.principal, user_id), "user_deactivated"
        )

    @post("/{user_id:uuid}/reactivate", summary="Reactivate a user")
    async def reactivate(
        self,
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        return await self._apply_account_change(
            viewer, db_session, user_id, accounts.reactivate(viewer.principal, user_id), "user_reactivated"
        )

    @post("/{user_id:uuid}/reset-mfa", summary="Reset a user's two-factor authentication")
    async def reset_mfa(
        self,
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> Template | Response[None]:
        return await self._apply_account_change(
            viewer, db_session, user_id, accounts.reset_mfa(viewer.principal, user_id), "mfa_reset"
        )


def _group_values(form: Any) -> dict[str, str]:
    return {name: str(form.get(name) or "").strip() for name in ("name", "description")}


class GroupPages(Controller):
    path = "/groups"
    dependencies = {"viewer": Provide(provide_admin_viewer)}

    @get("/", summary="Groups")
    async def list_groups(self, viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]) -> Template:
        return page(viewer, "groups/list.html", groups=await groups_with_member_counts(db_session))

    def _new_page(
        self,
        viewer: Viewer,
        values: dict[str, str],
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        return page(
            viewer, "groups/new.html", status_code=status_code if errors else 200, values=values, errors=errors or {}
        )

    @get("/new", summary="Create a group")
    async def new_group(self, viewer: NamedDependency[Viewer]) -> Template:
        return self._new_page(viewer, {})

    @post("/new", summary="Create a group")
    async def create(
        self,
        viewer: NamedDependency[Viewer],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        values = _group_values(await request.form())
        async with FormSubmission(db_session) as submission:
            data = parse(GroupCreate, values)
            group = await groups.create(viewer_actor(viewer, request), name=data.name, description=data.description)
        if submission.refused:
            return self._new_page(viewer, values, submission.errors, submission.status_code)
        return see_other(f"{PORTAL}/groups/{group.id}", "group_created")

    async def _group_page(
        self,
        viewer: Viewer,
        db_session: AsyncSession,
        group_id: UUID,
        *,
        values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        status_code: int = HTTP_400_BAD_REQUEST,
    ) -> Template:
        group = await user_group(db_session, group_id)
        members = await group_members(db_session, group)
        member_ids = {member.id for member in members}
        candidates = [
            (str(user.id), user.email) for user in await organization_users(db_session) if user.id not in member_ids
        ]
        budget = await budget_form(db_session, "group", group.id, viewer.organization.currency)
        stored = {"name": group.name, "description": group.description or ""}
        return page(
            viewer,
            "groups/detail.html",
            status_code=status_code if errors else 200,
            group=group,
            members=members,
            candidates=candidates,
            budget=budget,
            values=stored | budget.values | (values or {}),
            errors=errors or {},
        )

    @get("/{group_id:uuid}", summary="A group and its members")
    async def show_group(
        self, group_id: FromPath[UUID], viewer: NamedDependency[Viewer], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return await self._group_page(viewer, db_session, group_id)

    @post("/{group_id:uuid}", summary="Rename a group")
    async def update(
        self,
        group_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        group = await user_group(db_session, group_id)
        values = _group_values(await request.form())
        async with FormSubmission(db_session) as submission:
            data = parse(GroupCreate, values)
            await groups.update(viewer_actor(viewer, request), group, name=data.name, description=data.description)
        if submission.refused:
            return await self._group_page(
                viewer,
                db_session,
                group_id,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/groups/{group_id}", "group_saved")

    @post("/{group_id:uuid}/budget", summary="Set a group's budget and policy")
    async def set_budget(
        self,
        group_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        budgets: NamedDependency[BudgetService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        values, submission = await submit_budget(request, viewer, budgets, db_session, "group", group_id)
        if submission.refused:
            return await self._group_page(
                viewer,
                db_session,
                group_id,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/groups/{group_id}#budget", "budget_saved")

    @post("/{group_id:uuid}/delete", summary="Delete a group")
    async def delete(
        self,
        group_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        group = await user_group(db_session, group_id)
        async with FormSubmission(db_session) as submission:
            await groups.delete(viewer_actor(viewer, request), group)
        if submission.refused:
            return await self._group_page(
                viewer, db_session, group_id, errors=submission.errors, status_code=submission.status_code
            )
        return see_other(f"{PORTAL}/groups", "group_deleted")

    @post("/{group_id:uuid}/members", summary="Add a member")
    async def add_member(
        self,
        group_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Template | Response[None]:
        group = await user_group(db_session, group_id)
        values = {"user_id": str((await request.form()).get("user_id") or "").strip()}
        async with FormSubmission(db_session) as submission:
            data = parse(MemberAdd, values)
            await groups.add_member(viewer_actor(viewer, request), group, data.user_id)
        if submission.refused:
            return await self._group_page(
                viewer,
                db_session,
                group_id,
                values=values,
                errors=submission.errors,
                status_code=submission.status_code,
            )
        return see_other(f"{PORTAL}/groups/{group_id}", "member_added")

    @post("/{group_id:uuid}/members/{user_id:uuid}/remove", summary="Remove a member")
    async def remove_member(
        self,
        group_id: FromPath[UUID],
        user_id: FromPath[UUID],
        viewer: NamedDependency[Viewer],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
        request: PortalRequest,
    ) -> Response[None]:
        group = await user_group(db_session, group_id)
        await groups.remove_member(viewer_actor(viewer, request), group, user_id)
        return see_other(f"{PORTAL}/groups/{group_id}", "member_removed")
