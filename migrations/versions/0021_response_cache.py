"""Response cache: each API key uses it as its organization says (`inherit`), or always (`on`) or never (`off`).

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-30 12:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_tokens", sa.Column("response_cache", sa.String(length=10), server_default="inherit", nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_provider_tokens_response_cache"), "provider_tokens", "response_cache IN ('inherit', 'on', 'off')"
    )
    # The token lookup returns the key's cache mode too: a new row type, so the policies make it again.
    op.execute("DROP FUNCTION IF EXISTS public.gateway_token_lookup(text)")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS public.gateway_token_lookup(text)")
    op.drop_constraint(op.f("ck_provider_tokens_response_cache"), "provider_tokens", type_="check")
    op.drop_column("provider_tokens", "response_cache")
