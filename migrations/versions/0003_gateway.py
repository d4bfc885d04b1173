"""gateway: provider types, channels, tokens, prices, usage logs; tenant quota

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 11:51:57.428886
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_types",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("api_format", sa.String(length=20), nullable=False),
        sa.Column(
            "supported_models",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.CheckConstraint(
            "api_format IN ('openai', 'azure', 'anthropic', 'echo')", name=op.f("ck_provider_types_api_format")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_types")),
        sa.UniqueConstraint("name", name=op.f("uq_provider_types_name")),
    )
    provider_types = sa.table(
        "provider_types",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("display_name", sa.String),
        sa.column("base_url", sa.Text),
        sa.column("api_format", sa.String),
    )
    op.bulk_insert(
        provider_types,
        [
            {
                "id": 1,
                "name": "openai",
                "display_name": "OpenAI",
                "base_url": "https://api.openai.com/v1",
                "api_format": "openai",
            },
            {
                "id": 2,
                "name": "anthropic",
                "display_name": "Anthropic",
                "base_url": "https://api.anthropic.com/v1",
                "api_format": "anthropic",
            },
            {
                "id": 3,
                "name": "deepseek",
                "display_name": "DeepSeek",
                "base_url": "https://api.deepseek.com/v1",
                "api_format": "openai",
            },
            {"id": 4, "name": "azure-openai", "display_name": "Azure OpenAI", "base_url": None, "api_format": "azure"},
            {
                "id": 5,
                "name": "zhipu",
                "display_name": "Zhipu AI",
                "base_url": "https://open.bigmodel.cn/api/paas/v4",
                "api_format": "openai",
            },
            {
                "id": 6,
                "name": "openai-compatible",
                "display_name": "OpenAI-compatible (any base URL)",
                "base_url": None,
                "api_format": "openai",
            },
            {
                "id": 7,
                "name": "echo",
                "display_name": "Echo (local, no network; for trying Lyss out)",
                "base_url": None,
                "api_format": "echo",
            },
        ],
    )
    op.create_table(
        "provider_model_prices",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("prompt_price", sa.BigInteger(), nullable=False),
        sa.Column("completion_price", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("prompt_price >= 0 AND completion_price >= 0", name=op.f("ck_provider_model_prices_prices")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_provider_model_prices_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_model_prices")),
        sa.UniqueConstraint("tenant_id", "model", name="uk_provider_model_prices_model"),
    )
    op.create_table(
        "provider_usage_logs",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("token_id", sa.Uuid(), nullable=True),
        sa.Column("channel_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("endpoint", sa.String(length=30), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("upstream_model", sa.String(length=100), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("completion_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("latency_ms", sa.Integer(), server_default="0", nullable=False),
        sa.Column("upstream_latency_ms", sa.Integer(), nullable=True),
        sa.Column("status_code", sa.Integer(), server_default="200", nullable=False),
        sa.Column("outcome", sa.String(length=30), server_default="ok", nullable=False),
        sa.Column("stream", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_provider_usage_logs_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_usage_logs")),
    )
    op.create_index(
        "idx_usage_logs_tenant_created",
        "provider_usage_logs",
        ["tenant_id", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_index(
        "idx_usage_logs_tenant_token_created",
        "provider_usage_logs",
        ["tenant_id", "token_id", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_table(
        "provider_tokens",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("quota", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column("used_quota", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("budget_period", sa.String(length=10), server_default="none", nullable=False),
        sa.Column("rpm_limit", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tpm_limit", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "allowed_models",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "allowed_channels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "allowed_ips",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "budget_period IN ('none', 'daily', 'monthly')", name=op.f("ck_provider_tokens_budget_period")
        ),
        sa.CheckConstraint("status IN ('active', 'disabled')", name=op.f("ck_provider_tokens_status")),
        sa.CheckConstraint("quota >= -1 AND used_quota >= 0", name=op.f("ck_provider_tokens_quota")),
        sa.CheckConstraint("rpm_limit >= 0 AND tpm_limit >= 0", name=op.f("ck_provider_tokens_limits")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_provider_tokens_user",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_provider_tokens_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_tokens")),
        sa.UniqueConstraint("tenant_id", "key_hash", name="uk_provider_tokens_tenant_key_hash"),
        sa.UniqueConstraint("tenant_id", "user_id", "name", name="uk_provider_tokens_user_name"),
    )
    op.create_index("idx_provider_tokens_key_hash", "provider_tokens", ["key_hash"], unique=False)
    op.create_index("idx_provider_tokens_tenant_user", "provider_tokens", ["tenant_id", "user_id"], unique=False)
    op.create_table(
        "provider_channels",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("type_id", sa.Integer(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("api_version", sa.String(length=40), nullable=True),
        sa.Column("encrypted_keys", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="1", nullable=False),
        sa.Column("weight", sa.Integer(), server_default="1", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="enabled", nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("quota", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column("used_quota", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rate_limit", sa.Integer(), server_default="0", nullable=False),
        sa.Column("config_scope", sa.String(length=20), server_default="tenant", nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column(
            "models", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "model_mapping",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("test_model", sa.String(length=100), nullable=True),
        sa.Column("last_test_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_latency_ms", sa.Integer(), nullable=True),
        sa.Column("last_test_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "config_scope <> 'group' OR group_id IS NOT NULL", name=op.f("ck_provider_channels_group_set")
        ),
        sa.CheckConstraint(
            "config_scope <> 'personal' OR owner_id IS NOT NULL", name=op.f("ck_provider_channels_personal_owner")
        ),
        sa.CheckConstraint(
            "config_scope IN ('tenant', 'group', 'personal')", name=op.f("ck_provider_channels_config_scope")
        ),
        sa.CheckConstraint(
            "status IN ('enabled', 'disabled', 'auto_disabled')", name=op.f("ck_provider_channels_status")
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 1000", name=op.f("ck_provider_channels_priority")),
        sa.CheckConstraint("quota >= -1 AND used_quota >= 0", name=op.f("ck_provider_channels_quota")),
        sa.CheckConstraint("weight BETWEEN 1 AND 10000", name=op.f("ck_provider_channels_weight")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "group_id"],
            ["tenant_user_groups.tenant_id", "tenant_user_groups.id"],
            name="fk_provider_channels_group",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "owner_id"],
            ["auth_users.tenant_id", "auth_users.id"],
            name="fk_provider_channels_owner",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant_organizations.id"],
            name=op.f("fk_provider_channels_tenant_id_tenant_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["type_id"], ["provider_types.id"], name=op.f("fk_provider_channels_type_id_provider_types")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_channels")),
        sa.UniqueConstraint("tenant_id", "id", name="uk_provider_channels_tenant_id_id"),
        sa.UniqueConstraint("tenant_id", "name", name="uk_provider_channels_tenant_name"),
    )
    op.create_index("idx_channels_tenant_scope", "provider_channels", ["tenant_id", "config_scope"], unique=False)
    op.create_index("idx_channels_tenant_status", "provider_channels", ["tenant_id", "status"], unique=False)
    op.add_column("tenant_organizations", sa.Column("quota", sa.BigInteger(), server_default="-1", nullable=False))
    op.add_column("tenant_organizations", sa.Column("used_quota", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("tenant_organizations", "used_quota")
    op.drop_column("tenant_organizations", "quota")
    op.drop_index("idx_channels_tenant_status", table_name="provider_channels")
    op.drop_index("idx_channels_tenant_scope", table_name="provider_channels")
    op.drop_table("provider_channels")
    op.drop_index("idx_provider_tokens_tenant_user", table_name="provider_tokens")
    op.drop_index("idx_provider_tokens_key_hash", table_name="provider_tokens")
    op.drop_table("provider_tokens")
    op.drop_index("idx_usage_logs_tenant_token_created", table_name="provider_usage_logs")
    op.drop_index("idx_usage_logs_tenant_created", table_name="provider_usage_logs")
    op.drop_table("provider_usage_logs")
    op.drop_table("provider_model_prices")
    op.drop_table("provider_types")
