"""Every mapped table, imported in one place so that metadata and mappers are complete."""

from db.auth import Invitation, OAuthConnection, OAuthProvider, RecoveryCode, User, UserSession
from db.base import Base
from db.tenant import AuditEvent, Organization, UserGroup, UserGroupMember

__all__ = [
    "AuditEvent",
    "Base",
    "Invitation",
    "OAuthConnection",
    "OAuthProvider",
    "Organization",
    "RecoveryCode",
    "User",
    "UserGroup",
    "UserGroupMember",
    "UserSession",
]
