"""Declarative base and the column mixins every Lyss table is built from."""

from __future__ import annotations

import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from sqlalchemy import DateTime, ForeignKey, func, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column
from uuid_utils.compat import uuid7


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Base(DefaultBase):
    """UUID primary key: v7 from the application (index-friendly), v4 from the database for raw inserts."""

    __abstract__ = True

    id: Mapped[UUID] = mapped_column(
        primary_key=True, default=uuid7, server_default=text("gen_random_uuid()"), sort_order=-100
    )
    created_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, server_default=func.now(), sort_order=3000
    )


class UpdatedAt:
    """Adds `updated_at`, maintained by the ORM on every update."""

    updated_at: Mapped[datetime.datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now, server_default=func.now(), sort_order=3001
    )


class TenantOwned:
    """Adds `tenant_id`. Row-level security keys every policy on it; the session fills it on insert.

    The table's primary key is `(tenant_id, id)`, as Citus requires of a table distributed by tenant
    (docs/operations.md, "Scaling out with Citus"); the mapper keeps `id` alone as the identity, so
    `session.get(Model, id)` works unchanged (ids are UUIDs, unique across tenants anyway).
    """

    @declared_attr
    def tenant_id(cls) -> Mapped[UUID]:
        # sort_order before `id`: the primary key lists its columns in table order, tenant_id first.
        return mapped_column(
            ForeignKey("tenant_organizations.id", ondelete="CASCADE"),
            nullable=False,
            primary_key=True,
            sort_order=-101,
        )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        return {"primary_key": ["id"]}
