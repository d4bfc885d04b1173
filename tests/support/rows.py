"""One new row of each tenant table, for the isolation tests (the RLS matrix and the cross-tenant routes)."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from uuid_utils.compat import uuid7

from db.auth import Invitation, OAuthConnection, OAuthProvider, PasswordReset, RecoveryCode, User, UserSession
from db.chat import Attachment, Conversation, Message, Summary
from db.knowledge import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from db.memory import Memory, MemoryAssociation, MemoryHistory
from db.provider import (
    NO_ID,
    ApiToken,
    Channel,
    ModelAlias,
    ModelPrice,
    ModelRouting,
    StoredResponse,
    UsageDaily,
    UsageHourly,
    UsageLog,
)
from db.tenant import (
    AuditEvent,
    Budget,
    Job,
    JobEvent,
    Organization,
    UserGroup,
    UserGroupMember,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.support.tenants import TEST_PASSWORD_HASH, TenantRows


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _rollup() -> dict[str, object]:
    return {
        "start": datetime.datetime.now(datetime.UTC).replace(minute=0, second=0, microsecond=0),
        "kind": "model",
        "user_id": NO_ID,
        "token_id": NO_ID,
        "model": unique("model"),
        **dict.fromkeys(("calls", "errors", "prompt_tokens", "completion_tokens", "cached_tokens"), 1),
        **dict.fromkeys(("cost", "overshoot", "latency_ms_sum"), 1),
    }


def expiry() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)


# One factory per tenant table: a new row for tenant `tenant_id` whose references point at `parents`.
# Normally both are the same tenant; the tests mix them to attempt cross-tenant writes.
RowFactory = Callable[[UUID, TenantRows], DefaultBase]
ROW_FACTORIES: dict[str, RowFactory] = {
    # The organization row *is* the tenant: "a row of tenant X" is a new organization that is not X.
    "tenant_organizations": lambda tenant_id, parents: Organization(id=uuid7(), slug=unique("org"), name="Org"),
    "auth_users": lambda tenant_id, parents: User(
        tenant_id=tenant_id, email=f"{unique('u')}@example.com", hashed_password=TEST_PASSWORD_HASH
    ),
    "auth_user_sessions": lambda tenant_id, parents: UserSession(
        tenant_id=tenant_id,
        user_id=parents.user.id,
        family_id=uuid7(),
        kind="api",
        refresh_token_hash=secrets.token_hex(32),
        expires_at=expiry(),
        refresh_expires_at=expiry(),
    ),
    "auth_oauth_providers": lambda tenant_id, parents: OAuthProvider(
        tenant_id=tenant_id,
        provider_name=unique("oidc"),
        discovery_url="https://idp.example.com/.well-known/openid-configuration",
        client_id="client",
        encrypted_client_secret="v1:test:x",
        redirect_uri="https://example.com/cb",
    ),
    "auth_oauth_connections": lambda tenant_id, parents: OAuthConnection(
        tenant_id=tenant_id, user_id=parents.admin.id, provider_id=parents.oauth_provider.id, external_id=unique("ext")
    ),
    "auth_mfa_recovery_codes": lambda tenant_id, parents: RecoveryCode(
        tenant_id=tenant_id, user_id=parents.user.id, code_hash=secrets.token_hex(32)
    ),
    "auth_invitations": lambda tenant_id, parents: Invitation(
        tenant_id=tenant_id,
        email=f"{unique('invitee')}@example.com",
        role="end_user",
        token_hash=secrets.token_hex(32),
        invited_by=parents.admin.id,
        expires_at=expiry(),
    ),
    "auth_password_resets": lambda tenant_id, parents: PasswordReset(
        tenant_id=tenant_id,
        user_id=parents.user.id,
        token_hash=secrets.token_hex(32),
        issued_by=parents.admin.id,
        expires_at=expiry(),
    ),
    "tenant_user_groups": lambda tenant_id, parents: UserGroup(
        tenant_id=tenant_id, name=unique("group"), created_by=parents.admin.id
    ),
    "tenant_user_group_members": lambda tenant_id, parents: UserGroupMember(
        tenant_id=tenant_id, group_id=parents.group.id, user_id=parents.user.id
    ),
    "tenant_budgets": lambda tenant_id, parents: Budget(
        tenant_id=tenant_id, kind="group", group_id=parents.group.id, quota=1_000_000
    ),
    "tenant_audit_events": lambda tenant_id, parents: AuditEvent(tenant_id=tenant_id, actor="test", action="test"),
    "provider_channels": lambda tenant_id, parents: Channel(
        tenant_id=tenant_id,
        name=unique("channel"),
        type_id=1,
        encrypted_keys="v1:test:x",
        config_scope="personal",
        owner_id=parents.user.id,
    ),
    "provider_tokens": lambda tenant_id, parents: ApiToken(
        tenant_id=tenant_id,
        user_id=parents.user.id,
        name=unique("token"),
        key_hash=secrets.token_hex(32),
        key_prefix="sk-lyss-test",
    ),
    "provider_model_prices": lambda tenant_id, parents: ModelPrice(
        tenant_id=tenant_id, model=unique("model"), prompt_price=1, completion_price=2
    ),
    "provider_model_aliases": lambda tenant_id, parents: ModelAlias(
        tenant_id=tenant_id, name=unique("alias"), models=["gpt-4o"]
    ),
    "provider_model_routing": lambda tenant_id, parents: ModelRouting(
        tenant_id=tenant_id, model=unique("model"), strategy="latency"
    ),
    "provider_responses": lambda tenant_id, parents: StoredResponse(
        tenant_id=tenant_id,
        response_id=f"resp_{secrets.token_hex(16)}",
        token_id=uuid7(),
        user_id=parents.user.id,
        model="m",
        input_items=[],
        response={},
        expires_at=expiry(),
    ),
    "provider_usage_logs": lambda tenant_id, parents: UsageLog(tenant_id=tenant_id, endpoint="chat", model="m"),
    "provider_usage_hourly": lambda tenant_id, parents: UsageHourly(tenant_id=tenant_id, **_rollup()),
    "provider_usage_daily": lambda tenant_id, parents: UsageDaily(tenant_id=tenant_id, **_rollup()),
    "tenant_jobs": lambda tenant_id, parents: Job(
        tenant_id=tenant_id, kind="test.kind", idempotency_key=unique("key"), created_by=parents.user.id
    ),
    "tenant_job_events": lambda tenant_id, parents: JobEvent(tenant_id=tenant_id, job_id=parents.job.id, event="log"),
    "tenant_webhook_endpoints": lambda tenant_id, parents: WebhookEndpoint(
        tenant_id=tenant_id,
        url="https://hooks.example.com/",
        encrypted_secret="v1:test:x",
        events=["job.dead_lettered"],
    ),
    "tenant_webhook_deliveries": lambda tenant_id, parents: WebhookDelivery(
        tenant_id=tenant_id,
        endpoint_id=parents.webhook.id,
        event_id=uuid7(),
        event_kind="webhook.test",
        payload={},
        attempt=1,
        outcome="failed",
    ),
    "chat_conversations": lambda tenant_id, parents: Conversation(
        tenant_id=tenant_id, user_id=parents.user.id, title="T", model="m"
    ),
    "chat_messages": lambda tenant_id, parents: Message(
        tenant_id=tenant_id, conversation_id=parents.conversation.id, role="user", content="hi"
    ),
    "chat_attachments": lambda tenant_id, parents: Attachment(
        tenant_id=tenant_id,
        conversation_id=parents.conversation.id,
        filename="notes.txt",
        content_type="text/plain",
        size_bytes=1,
        object_name="attachments/x",
    ),
    "chat_summaries": lambda tenant_id, parents: Summary(
        tenant_id=tenant_id,
        conversation_id=parents.conversation.id,
        summary_text="s",
        covers_until=expiry(),
        message_count=1,
    ),
    "memory_user_memories": lambda tenant_id, parents: Memory(
        tenant_id=tenant_id, user_id=parents.user.id, memory_text="m", memory_hash=secrets.token_hex(32)
    ),
    "memory_associations": lambda tenant_id, parents: MemoryAssociation(
        tenant_id=tenant_id, memory_id=parents.memory.id, related_memory_id=parents.related_memory.id, strength=0.9
    ),
    "memory_history": lambda tenant_id, parents: MemoryHistory(
        tenant_id=tenant_id, memory_id=parents.memory.id, event="ADD", new_text="m", actor="user"
    ),
    "kb_bases": lambda tenant_id, parents: KnowledgeBase(
        tenant_id=tenant_id, name=unique("kb"), scope="user", owner_user_id=parents.user.id, embedding_model="e"
    ),
    "kb_documents": lambda tenant_id, parents: KnowledgeDocument(
        tenant_id=tenant_id,
        base_id=parents.kb_base.id,
        filename="a.txt",
        content_type="text/plain",
        size_bytes=1,
        content_hash=secrets.token_hex(32),
        object_key="kb/x/a.txt",
    ),
    "kb_chunks": lambda tenant_id, parents: KnowledgeChunk(
        tenant_id=tenant_id,
        base_id=parents.kb_base.id,
        document_id=parents.kb_document.id,
        level="passage",
        position=secrets.randbelow(1_000_000),
        start_offset=0,
        end_offset=1,
        text="c",
        token_count=1,
        content_hash=secrets.token_hex(32),
        language="english",
    ),
}
