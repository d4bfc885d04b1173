"""The fixture tenants (an admin, an end user and the rows other rows hang from) and their audit log."""

from __future__ import annotations

import secrets
from uuid import UUID

import msgspec
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uuid_utils.compat import uuid7

from app.encryption import SecretBox, secret_context
from db.auth import OAuthProvider, User
from db.chat import Conversation
from db.knowledge import KnowledgeBase, KnowledgeDocument
from db.memory import Memory
from db.session import tenant_session
from db.tenant import AuditEvent, Job, Organization, UserGroup, WebhookEndpoint

TEST_PASSWORD = "correct horse battery staple"
# One real argon2id hash, computed once: hashing per fixture user would cost ~50 ms each.
TEST_PASSWORD_HASH = PasswordHasher().hash(TEST_PASSWORD)


class TenantRows(msgspec.Struct, frozen=True):
    """A tenant with the rows other rows hang from: an admin, an end user, a group, an OAuth provider."""

    id: UUID
    slug: str
    admin: User
    user: User
    group: UserGroup
    oauth_provider: OAuthProvider
    job: Job
    conversation: Conversation
    memory: Memory
    related_memory: Memory
    webhook: WebhookEndpoint
    kb_base: KnowledgeBase
    kb_document: KnowledgeDocument


async def create_tenant_rows(
    session_maker: async_sessionmaker[AsyncSession], slug: str, secret_box: SecretBox
) -> TenantRows:
    tenant_id = uuid7()
    async with tenant_session(session_maker, tenant_id) as session:
        session.add(Organization(id=tenant_id, slug=slug, name=slug.title()))
        await session.flush()  # no relationship() tells the unit of work that users depend on it
        admin = User(email=f"admin@{slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="tenant_admin")
        user = User(email=f"user@{slug}.example.com", hashed_password=TEST_PASSWORD_HASH, role="end_user")
        session.add_all([admin, user])
        await session.flush()
        group = UserGroup(name="engineering", created_by=admin.id)
        provider = OAuthProvider(
            provider_name="github",
            kind="github",
            client_id=f"{slug}-client",
            encrypted_client_secret=secret_box.encrypt(
                "fixture-client-secret",
                context=secret_context("auth_oauth_providers", "encrypted_client_secret", tenant_id),
            ),
            redirect_uri=f"https://{slug}.example.com/callback",
        )
        job = Job(kind="fixture.finished", status="succeeded", progress=100)
        conversation = Conversation(user_id=user.id, title="Fixture", model="fixture-model")
        memory = Memory(user_id=admin.id, memory_text="Likes tea", memory_hash=secrets.token_hex(32))
        related_memory = Memory(user_id=admin.id, memory_text="Likes green tea", memory_hash=secrets.token_hex(32))
        webhook = WebhookEndpoint(
            url=f"https://{slug}.example.com/hooks",
            encrypted_secret=secret_box.encrypt(
                "fixture-webhook-secret",
                context=secret_context("tenant_webhook_endpoints", "encrypted_secret", tenant_id),
            ),
            events=["job.dead_lettered"],
            enabled=False,  # the tests' own receivers get the events, never this address
        )
        kb_base = KnowledgeBase(name="Handbook", scope="tenant", embedding_model="fixture-embedder")
        session.add_all([group, provider, job, conversation, memory, related_memory, webhook, kb_base])
        await session.flush()
        kb_document = KnowledgeDocument(
            base_id=kb_base.id,
            filename="handbook.md",
            content_type="text/markdown",
            size_bytes=1,
            content_hash=secrets.token_hex(32),
            object_key=f"kb/{kb_base.id}/handbook.md",
        )
        session.add(kb_document)
        await session.commit()
    return TenantRows(
        id=tenant_id,
        slug=slug,
        admin=admin,
        user=user,
        group=group,
        oauth_provider=provider,
        job=job,
        conversation=conversation,
        memory=memory,
        related_memory=related_memory,
        webhook=webhook,
        kb_base=kb_base,
        kb_document=kb_document,
    )


async def audit_events(session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID) -> list[AuditEvent]:
    """The tenant's audit log, oldest first (ids are time-ordered: they break ties within a timestamp)."""
    async with tenant_session(session_maker, tenant_id) as session:
        return list(await session.scalars(select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id)))


async def audit_actions(session_maker: async_sessionmaker[AsyncSession], tenant_id: UUID) -> list[str]:
    return [event.action for event in await audit_events(session_maker, tenant_id)]
