"""Overshoot in usage rows; the parameter that bounds a completion at each kind of provider.

`provider_usage_logs.overshoot`: credits by which a provider's reported usage exceeded the call's
reservation (not charged, recorded). `provider_types.output_limit_parameter`: `max_completion_tokens` for
OpenAI and Azure OpenAI (their reasoning models refuse `max_tokens`), `max_tokens` for the others.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "provider_usage_logs",
        sa.Column("overshoot", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_check_constraint(op.f("ck_provider_usage_logs_overshoot"), "provider_usage_logs", "overshoot >= 0")
    op.add_column(
        "provider_types",
        sa.Column("output_limit_parameter", sa.String(30), server_default="max_tokens", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_provider_types_output_limit_parameter"),
        "provider_types",
        "output_limit_parameter IN ('max_tokens', 'max_completion_tokens')",
    )
    op.execute(
        "UPDATE provider_types SET output_limit_parameter = 'max_completion_tokens' "
        "WHERE name IN ('openai', 'azure-openai')"
    )


def downgrade() -> None:
    op.drop_column("provider_types", "output_limit_parameter")
    op.drop_column("provider_usage_logs", "overshoot")
