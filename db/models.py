"""Every mapped table, imported in one place so that metadata and mappers are complete."""

from db.auth import Invitation, OAuthConnection, OAuthProvider, RecoveryCode, User, UserSession
from db.base import Base
from db.chat import Attachment, Conversation, Message, Summary
from db.knowledge import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from db.memory import Memory, MemoryAssociation, MemoryHistory
from db.provider import ApiToken, Channel, ModelPrice, ProviderType, UsageLog
from db.tenant import (
    AuditEvent,
    Job,
    JobEvent,
    Organization,
    Plan,
    UserGroup,
    UserGroupMember,
    WebhookDelivery,
    WebhookEndpoint,
)

__all__ = [
    "ApiToken",
    "Attachment",
    "AuditEvent",
    "Base",
    "Channel",
    "Conversation",
    "Invitation",
    "Job",
    "JobEvent",
    "KnowledgeBase",
    "KnowledgeChunk",
    "KnowledgeDocument",
    "Memory",
    "MemoryAssociation",
    "MemoryHistory",
    "Message",
    "ModelPrice",
    "OAuthConnection",
    "OAuthProvider",
    "Organization",
    "Plan",
    "ProviderType",
    "RecoveryCode",
    "Summary",
    "UsageLog",
    "User",
    "UserGroup",
    "UserGroupMember",
    "UserSession",
    "WebhookDelivery",
    "WebhookEndpoint",
]
