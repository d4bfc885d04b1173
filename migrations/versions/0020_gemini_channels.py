"""Google Gemini channels: the `gemini` wire format and a provider type that speaks it.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-30 12:45:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f("ck_provider_types_api_format"), "provider_types", type_="check")
    op.create_check_constraint(
        op.f("ck_provider_types_api_format"),
        "provider_types",
        "api_format IN ('openai', 'azure', 'anthropic', 'echo', 'gemini')",
    )
    # An id of its own far from the seeded ones, so that types added by other migrations cannot take it.
    op.execute(
        "INSERT INTO provider_types (id, name, display_name, base_url, api_format, output_limit_parameter) "
        "VALUES (20, 'gemini', 'Google Gemini', 'https://generativelanguage.googleapis.com/v1beta', 'gemini', "
        "'max_tokens')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM provider_types WHERE name = 'gemini'")
    op.drop_constraint(op.f("ck_provider_types_api_format"), "provider_types", type_="check")
    op.create_check_constraint(
        op.f("ck_provider_types_api_format"), "provider_types", "api_format IN ('openai', 'azure', 'anthropic', 'echo')"
    )
