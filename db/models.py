"""Every mapped table, imported in one place so that metadata and mappers are complete."""

from db.auth import Invitation, OAuthConnection, OAuthProvider, RecoveryCode, User, UserSession
from db.base import Base
from db.provider import ApiToken, Channel, ModelPrice, ProviderType, UsageLog
from db.tenant import AuditEvent, Job, JobEvent, Organization, UserGroup, UserGroupMember

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Base",
    "Channel",
    "Invitation",
    "Job",
    "JobEvent",
    "ModelPrice",
    "OAuthConnection",
    "OAuthProvider",
    "Organization",
    "ProviderType",
    "RecoveryCode",
    "UsageLog",
    "User",
    "UserGroup",
    "UserGroupMember",
    "UserSession",
]
