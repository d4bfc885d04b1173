"""Every mapped table, imported in one place so that metadata and mappers are complete."""

from db.auth import OAuthConnection, OAuthProvider, User, UserSession
from db.base import Base
from db.tenant import AuditEvent, Organization, UserGroup, UserGroupMember

__all__ = [
    "AuditEvent",
    "Base",
    "OAuthConnection",
    "OAuthProvider",
    "Organization",
    "User",
    "UserGroup",
    "UserGroupMember",
    "UserSession",
]
