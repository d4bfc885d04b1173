"""Changes to groups of users (admins): each audited, committed and announced to the gateway, which routes by them."""

from __future__ import annotations

from uuid import UUID

from redis.asyncio import Redis
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound
from app.gateway.caches import GatewayCatalog, announce_change
from app.tenants.services import Actor, audit_change, organization_user, violated_constraint
from db.auth import User
from db.provider import Channel
from db.tenant import UserGroup, UserGroupMember


class GroupService:
    """The API and the portal make each change through one method here; neither commits nor announces."""

    def __init__(self, session: AsyncSession, redis: Redis, catalog: GatewayCatalog) -> None:
        self.session = session
        self.redis = redis
        self.catalog = catalog

    async def create(self, actor: Actor, *, name: str, description: str | None) -> UserGroup:
        group = UserGroup(name=name, description=description, created_by=actor.user_id)
        self.session.add(group)
        await self._flush_named(name)
        audit_change(self.session, actor, "group.created", "group", group.id, name=name)
        await self.session.commit()
        return group

    async def update(self, actor: Actor, group: UserGroup, *, name: str, description: str | None) -> None:
        """Rename a group or change its description."""
        old_name = group.name
        group.name = name
        group.description = description
        await self._flush_named(name)
        audit_change(self.session, actor, "group.updated", "group", group.id, old_name=old_name, name=name)
        # The gateway names a group in the refusals of its budget and policy.
        await self._commit_and_announce(group)

    async def delete(self, actor: Actor, group: UserGroup) -> None:
        """Delete a group and its memberships; refused while channels serve only this group."""
        # The foreign key would delete those channels with the group: make the admin choose what happens to them.
        names = await self.session.scalars(
            select(Channel.name).where(Channel.group_id == group.id).order_by(Channel.name)
        )
        channels = list(names)
        if channels:
            raise Conflict(
                f"The channels {', '.join(channels)} serve only this group; "
                "give them another scope or remove them first."
            )
        await self.session.delete(group)
        await self.session.flush()
        audit_change(self.session, actor, "group.deleted", "group", group.id, name=group.name)
        await self._commit_and_announce(group)

    async def add_member(self, actor: Actor, group: UserGroup, user_id: UUID) -> User:
        user = await organization_user(self.session, user_id, field="user_id")
        member = await self.session.scalar(
            select(UserGroupMember.id).where(UserGroupMember.group_id == group.id, UserGroupMember.user_id == user.id)
        )
        if member is not None:
            raise Conflict(f"{user.email} is already a member of {group.name}.", field="user_id")
        self.session.add(UserGroupMember(group_id=group.id, user_id=user.id))
        await self.session.flush()
        audit_change(
            self.session, actor, "group.member_added", "group", group.id, user_id=str(user.id), email=user.email
        )
        await self._commit_and_announce(group)
        return user

    async def remove_member(self, actor: Actor, group: UserGroup, user_id: UUID) -> None:
        removed = await self.session.execute(
            delete(UserGroupMember)
            .where(UserGroupMember.group_id == group.id, UserGroupMember.user_id == user_id)
            .returning(UserGroupMember.id)
        )
        if removed.first() is None:
            raise NotFound("That user is not a member of this group.")
        audit_change(self.session, actor, "group.member_removed", "group", group.id, user_id=str(user_id))
        await self._commit_and_announce(group)

    async def _flush_named(self, name: str) -> None:
        # The unique key decides, so that two admins naming groups at once cannot both win.
        try:
            await self.session.flush()
        except IntegrityError as error:
            if violated_constraint(error) == "uk_tenant_user_groups_tenant_name":
                raise Conflict(f"A group named '{name}' already exists; choose another name.", field="name") from None
            raise

    async def _commit_and_announce(self, group: UserGroup) -> None:
        # The gateway caches each user's groups, which decide the group-scoped channels they reach and the
        # budgets that bound them.
        await self.session.commit()
        await announce_change(self.redis, self.catalog, f"tenant:{group.tenant_id}")
