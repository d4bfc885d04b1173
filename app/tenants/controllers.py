"""HTTP endpoints of the tenants domain: the organization, its policy, users, groups, audit trail and webhooks."""

from __future__ import annotations

import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.guards import requires_tenant_admin
from app.auth.password_resets import IssuedPasswordReset
from app.auth.schemas import InvitationResponse
from app.auth.tokens import Principal
from app.errors import InvalidRequest
from app.gateway.admin import PriceAdmin
from app.keyset import Keyset
from app.schemas import read_as
from app.tenants.accounts import AccountService, pending_invitations
from app.tenants.audit import AuditFilter, audit_event_read, audit_page
from app.tenants.budgets import BudgetRead, BudgetService, BudgetWrite, read_budget
from app.tenants.groups import GroupService
from app.tenants.plans import PlanUsage, organization_read, plan_usage
from app.tenants.schemas import (
    AuditPage,
    GroupCreate,
    GroupDetail,
    GroupMemberRead,
    GroupRead,
    GroupUpdate,
    InvitationRead,
    MemberAdd,
    OrganizationRead,
    OrganizationUpdate,
    RoleChange,
    TenantPolicyRead,
    TenantPolicyUpdate,
    UserDetail,
    UserRead,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryRead,
    WebhookRead,
    WebhookTestSent,
    WebhookUpdate,
)
from app.tenants.services import (
    Actor,
    change_tenant_policy,
    group_ids_of_user,
    group_members,
    groups_with_member_counts,
    organization_user,
    organization_users,
    own_organization,
    tenant_policy,
    update_organization,
    user_group,
)
from app.tenants.webhooks import WebhookService, existing_webhook, list_webhooks, webhook_deliveries
from db.tenant import UserGroup


class TenantController(Controller):
    path = "/api/tenant"
    tags = ["tenants"]

    @get("/", summary="The caller's organization")
    async def get_own_tenant(
        self, request: Request[Principal, Any, State], db_session: NamedDependency[AsyncSession]
    ) -> OrganizationRead:
        return await organization_read(db_session, await own_organization(db_session, request.user.tenant_id))

    @get("/plan", summary="The organization's plan: each limit and how much of it is in use")
    async def get_own_plan(
        self, request: Request[Principal, Any, State], db_session: NamedDependency[AsyncSession]
    ) -> PlanUsage:
        return await plan_usage(db_session, request.user.user_id)

    @patch("/", guards=[requires_tenant_admin], summary="Rename the organization or change its display currency")
    async def update_own_tenant(
        self,
        data: JSONBody[OrganizationUpdate],
        request: Request[Principal, Any, State],
        actor: NamedDependency[Actor],
        price_admin: NamedDependency[PriceAdmin],
        db_session: NamedDependency[AsyncSession],
    ) -> OrganizationRead:
        organization = await own_organization(db_session, request.user.tenant_id)
        currency = organization.currency
        organization = await update_organization(
            db_session, organization, data, actor=actor.name, actor_user_id=request.user.user_id, client=actor.client
        )
        if organization.currency != currency:
            await price_admin.currency_changed()
        return await organization_read(db_session, organization)

    @get("/new-user-budget", guards=[requires_tenant_admin], summary="The budget and policy every new user starts with")
    async def get_new_user_budget(self, db_session: NamedDependency[AsyncSession]) -> BudgetRead:
        return await read_budget(db_session, "new_user")

    @patch("/new-user-budget", guards=[requires_tenant_admin], summary="Set the budget and policy new users start with")
    async def set_new_user_budget(
        self, data: JSONBody[BudgetWrite], actor: NamedDependency[Actor], budgets: NamedDependency[BudgetService]
    ) -> BudgetRead:
        return await budgets.set(actor, "new_user", None, data)

    @get("/policy", guards=[requires_tenant_admin], summary="The organization's security policy")
    async def get_policy(
        self, request: Request[Principal, Any, State], db_session: NamedDependency[AsyncSession]
    ) -> TenantPolicyRead:
        policy = tenant_policy(await own_organization(db_session, request.user.tenant_id))
        return TenantPolicyRead(**msgspec.structs.asdict(policy))

    @patch("/policy", guards=[requires_tenant_admin], summary="Change the security policy")
    async def update_policy(
        self,
        data: JSONBody[TenantPolicyUpdate],
        request: Request[Principal, Any, State],
        actor: NamedDependency[Actor],
        db_session: NamedDependency[AsyncSession],
    ) -> TenantPolicyRead:
        organization = await own_organization(db_session, request.user.tenant_id)
        policy = await change_tenant_policy(
            db_session,
            organization,
            data,
            actor=actor.name,
            actor_user_id=request.user.user_id,
            client=actor.client,
        )
        return TenantPolicyRead(**msgspec.structs.asdict(policy))


async def _visible_user(db_session: AsyncSession, user_id: UUID) -> UserDetail:
    user = await organization_user(db_session, user_id)
    return UserDetail(
        user=read_as(UserRead, user),
        group_ids=await group_ids_of_user(db_session, user.id),
    )


class UserAdminController(Controller):
    """The organization's accounts, for its administrators: the API twin of the portal's Users pages.

    Inviting is `POST /api/auth/invitations`; an invitee becomes a user by accepting.
    """

    path = "/api/users"
    tags = ["tenants: users"]
    guards = [requires_tenant_admin]

    @get("/", summary="The organization's users")
    async def list_users(self, db_session: NamedDependency[AsyncSession]) -> list[UserRead]:
        return [read_as(UserRead, user) for user in await organization_users(db_session)]

    @get("/{user_id:uuid}", summary="A user and the groups they belong to")
    async def get_user(self, user_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]) -> UserDetail:
        return await _visible_user(db_session, user_id)

    @get("/{user_id:uuid}/budget", summary="A user's own budget and policy (their groups' bound them too)")
    async def get_budget(self, user_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]) -> BudgetRead:
        return await read_budget(db_session, "user", user_id)

    @patch("/{user_id:uuid}/budget", summary="Set a user's budget and policy: every key of theirs draws on it")
    async def set_budget(
        self,
        user_id: FromPath[UUID],
        data: JSONBody[BudgetWrite],
        actor: NamedDependency[Actor],
        budgets: NamedDependency[BudgetService],
    ) -> BudgetRead:
        return await budgets.set(actor, "user", user_id, data)

    @put("/{user_id:uuid}/role", summary="Change a user's role (an administrator cannot demote themself)")
    async def change_role(
        self,
        user_id: FromPath[UUID],
        data: JSONBody[RoleChange],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> UserDetail:
        await accounts.change_role(request.user, user_id, data.role)
        return await _visible_user(db_session, user_id)

    @post("/{user_id:uuid}/deactivate", status_code=HTTP_200_OK, summary="Deactivate a user: signed out at once")
    async def deactivate(
        self,
        user_id: FromPath[UUID],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> UserDetail:
        await accounts.deactivate(request.user, user_id)
        return await _visible_user(db_session, user_id)

    @post("/{user_id:uuid}/reactivate", status_code=HTTP_200_OK, summary="Reactivate a user")
    async def reactivate(
        self,
        user_id: FromPath[UUID],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> UserDetail:
        await accounts.reactivate(request.user, user_id)
        return await _visible_user(db_session, user_id)

    @post("/{user_id:uuid}/reset-mfa", status_code=HTTP_200_OK, summary="Turn off a user's two-factor sign-in")
    async def reset_mfa(
        self,
        user_id: FromPath[UUID],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> UserDetail:
        await accounts.reset_mfa(request.user, user_id)
        return await _visible_user(db_session, user_id)

    @post("/{user_id:uuid}/password-reset", summary="A one-time link for the user to set a new password")
    async def issue_password_reset(
        self,
        user_id: FromPath[UUID],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
        db_session: NamedDependency[AsyncSession],
    ) -> IssuedPasswordReset:
        """The link is returned once (only its hash is kept) and works once, within 24 hours."""
        return await accounts.issue_password_reset(request.user, user_id)


class InvitationController(Controller):
    """Pending invitations, for the organization's administrators: the API twin of the Users page's list.

    Inviting is `POST /api/auth/invitations`.
    """

    path = "/api/invitations"
    tags = ["tenants: users"]
    guards = [requires_tenant_admin]

    @get("/", summary="Invitations not yet accepted nor expired, the soonest to expire first")
    async def list_invitations(self, db_session: NamedDependency[AsyncSession]) -> list[InvitationRead]:
        now = datetime.datetime.now(datetime.UTC)
        return [read_as(InvitationRead, invitation) for invitation in await pending_invitations(db_session, now)]

    @post("/{invitation_id:uuid}/reissue", status_code=HTTP_200_OK, summary="A new token and expiry: the old one dies")
    async def reissue(
        self,
        invitation_id: FromPath[UUID],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
    ) -> InvitationResponse:
        invitation, token = await accounts.reissue_invitation(request.user, invitation_id)
        return InvitationResponse(
            id=invitation.id,
            email=invitation.email,
            role=invitation.role,
            expires_at=invitation.expires_at,
            token=token,
        )

    @delete("/{invitation_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Revoke an invitation")
    async def revoke(
        self,
        invitation_id: FromPath[UUID],
        request: Request[Principal, Any, State],
        accounts: NamedDependency[AccountService],
    ) -> None:
        await accounts.revoke_invitation(request.user, invitation_id)


def _group_read(group: UserGroup, member_count: int) -> GroupRead:
    return read_as(GroupRead, group, member_count=member_count)


async def _group_detail(db_session: AsyncSession, group: UserGroup) -> GroupDetail:
    members = await group_members(db_session, group)
    return GroupDetail(
        group=_group_read(group, len(members)),
        members=[
            GroupMemberRead(user_id=user.id, email=user.email, role=user.role, status=user.status) for user in members
        ],
    )


class GroupController(Controller):
    """Groups of users (channels can be scoped to one): the API twin of the portal's Groups pages."""

    path = "/api/groups"
    tags = ["tenants: groups"]
    guards = [requires_tenant_admin]

    @get("/", summary="The organization's groups with their member counts")
    async def list_groups(self, db_session: NamedDependency[AsyncSession]) -> list[GroupRead]:
        return [_group_read(group, count) for group, count in await groups_with_member_counts(db_session)]

    @post("/", summary="Create a group")
    async def create(
        self,
        data: JSONBody[GroupCreate],
        actor: NamedDependency[Actor],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
    ) -> GroupDetail:
        group = await groups.create(actor, name=data.name, description=data.description)
        return await _group_detail(db_session, group)

    @get("/{group_id:uuid}", summary="A group and its members")
    async def get_group(self, group_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]) -> GroupDetail:
        return await _group_detail(db_session, await user_group(db_session, group_id))

    @patch("/{group_id:uuid}", summary="Rename a group or change its description")
    async def update(
        self,
        group_id: FromPath[UUID],
        data: JSONBody[GroupUpdate],
        actor: NamedDependency[Actor],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
    ) -> GroupDetail:
        group = await user_group(db_session, group_id)
        description = data.description if data.description is not None else group.description
        await groups.update(actor, group, name=data.name or group.name, description=description)
        return await _group_detail(db_session, group)

    @delete("/{group_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Delete a group (not while channels serve it)")
    async def remove(
        self,
        group_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        await groups.delete(actor, await user_group(db_session, group_id))

    @post("/{group_id:uuid}/members", summary="Add a user to a group")
    async def add_member(
        self,
        group_id: FromPath[UUID],
        data: JSONBody[MemberAdd],
        actor: NamedDependency[Actor],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
    ) -> GroupDetail:
        group = await user_group(db_session, group_id)
        await groups.add_member(actor, group, data.user_id)
        return await _group_detail(db_session, group)

    @delete(
        "/{group_id:uuid}/members/{user_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Remove a user from a group"
    )
    async def remove_member(
        self,
        group_id: FromPath[UUID],
        user_id: FromPath[UUID],
        actor: NamedDependency[Actor],
        groups: NamedDependency[GroupService],
        db_session: NamedDependency[AsyncSession],
    ) -> None:
        await groups.remove_member(actor, await user_group(db_session, group_id), user_id)

    @get("/{group_id:uuid}/budget", summary="A group's budget and policy, shared by its members")
    async def get_budget(self, group_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]) -> BudgetRead:
        return await read_budget(db_session, "group", group_id)

    @patch("/{group_id:uuid}/budget", summary="Set a group's budget and policy")
    async def set_budget(
        self,
        group_id: FromPath[UUID],
        data: JSONBody[BudgetWrite],
        actor: NamedDependency[Actor],
        budgets: NamedDependency[BudgetService],
    ) -> BudgetRead:
        return await budgets.set(actor, "group", group_id, data)


class AuditController(Controller):
    """The organization's audit trail, for its administrators: the API twin of the portal's Audit log."""

    path = "/api/audit"
    tags = ["tenants: audit"]
    guards = [requires_tenant_admin]

    @get("/", summary="Audit events, newest first, keyset-paginated")
    async def list_events(
        self,
        db_session: NamedDependency[AsyncSession],
        since: FromQuery[datetime.date | None] = None,
        until: FromQuery[datetime.date | None] = None,
        action: Annotated[str | None, QueryParameter(max_length=100)] = None,
        user_id: FromQuery[UUID | None] = None,
        # Named apart from the `actor` dependency (the caller); the query parameter is `actor`.
        recorded_actor: Annotated[str | None, QueryParameter(name="actor", max_length=255)] = None,
        target_type: Annotated[str | None, QueryParameter(max_length=50)] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        filters = AuditFilter(
            since=since, until=until, action=action, user_id=user_id, actor=recorded_actor, target_type=target_type
        )
        try:
            after = Keyset.parse(cursor) if cursor else None
        except InvalidRequest:
            raise InvalidRequest("cursor: pass back a next_cursor this API gave out.") from None
        events, last = await audit_page(db_session, filters, after=after, limit=limit)
        return AuditPage(
            items=[audit_event_read(event) for event in events], next_cursor=last.cursor() if last else None
        )


class WebhookController(Controller):
    """Endpoints the organization's events are posted to, and what became of each attempt (admins)."""

    path = "/api/webhooks"
    tags = ["tenants: webhooks"]
    guards = [requires_tenant_admin]

    @get("/", summary="The organization's webhook endpoints")
    async def list_webhooks(self, db_session: NamedDependency[AsyncSession]) -> list[WebhookRead]:
        return [read_as(WebhookRead, endpoint) for endpoint in await list_webhooks(db_session)]

    @post("/", summary="Add an endpoint; its signing secret is in this answer only")
    async def create(
        self,
        request: Request[Principal, Any, State],
        data: JSONBody[WebhookCreate],
        webhooks: NamedDependency[WebhookService],
    ) -> WebhookCreated:
        endpoint, secret = await webhooks.create(request.user.tenant_id, data)
        return read_as(WebhookCreated, endpoint, secret=secret)

    @get("/{webhook_id:uuid}", summary="An endpoint (never its secret)")
    async def get_webhook(self, webhook_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]) -> WebhookRead:
        return read_as(WebhookRead, await existing_webhook(db_session, webhook_id))

    @patch("/{webhook_id:uuid}", summary="Change an endpoint's address, events, description, secret or state")
    async def update(
        self, webhook_id: FromPath[UUID], data: JSONBody[WebhookUpdate], webhooks: NamedDependency[WebhookService]
    ) -> WebhookRead:
        return read_as(WebhookRead, await webhooks.update(webhook_id, data))

    @delete("/{webhook_id:uuid}", status_code=HTTP_204_NO_CONTENT, summary="Remove an endpoint and its delivery log")
    async def remove(self, webhook_id: FromPath[UUID], webhooks: NamedDependency[WebhookService]) -> None:
        await webhooks.delete(webhook_id)

    @get("/{webhook_id:uuid}/deliveries", summary="The endpoint's latest delivery attempts, newest first")
    async def deliveries(
        self, webhook_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> list[WebhookDeliveryRead]:
        return [read_as(WebhookDeliveryRead, row) for row in await webhook_deliveries(db_session, webhook_id)]

    @post("/{webhook_id:uuid}/test", status_code=HTTP_202_ACCEPTED, summary="Send a webhook.test event to it")
    async def send_test(self, webhook_id: FromPath[UUID], webhooks: NamedDependency[WebhookService]) -> WebhookTestSent:
        return WebhookTestSent(event_id=await webhooks.send_test(webhook_id))
