"""Usage rollups: provider_usage_hourly and provider_usage_daily, the log's sums per model, user, key (and user and model, daily).

The dashboard and the month totals read these instead of every call of their window. The flusher keeps them
in the transaction that writes the calls; this migration fills them from the calls already logged.

Revision ID: 0029
Revises: 0028
Create Date: 2026-11-30 17:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The rollup of each call as the flusher writes it (app/gateway/usage.py), frozen here as of this revision.
_BACKFILL = """
INSERT INTO {table} (tenant_id, kind, start, user_id, token_id, model, calls, errors, prompt_tokens,
    completion_tokens, cached_tokens, cost, overshoot, latency_ms_sum)
SELECT tenant_id,
       CASE GROUPING(user_id, token_id, model) WHEN 6 THEN 'model' WHEN 3 THEN 'user' WHEN 5 THEN 'key'
            ELSE 'user_model' END,
       start, coalesce(user_id, '00000000-0000-0000-0000-000000000000'),
       coalesce(token_id, '00000000-0000-0000-0000-000000000000'), coalesce(model, ''),
       count(*), count(*) FILTER (WHERE status_code NOT BETWEEN 200 AND 299), sum(prompt_tokens),
       sum(completion_tokens), sum(cached_tokens), sum(cost), sum(overshoot), sum(latency_ms)
FROM (SELECT *, date_trunc('{unit}', created_at, 'UTC') AS start FROM provider_usage_logs) AS calls
GROUP BY tenant_id, start, GROUPING SETS ({sets})
"""


def upgrade() -> None:
    for table in ("provider_usage_hourly", "provider_usage_daily"):
        op.execute(
            f"""
            CREATE TABLE {table} (
                tenant_id uuid NOT NULL CONSTRAINT fk_{table}_tenant_id_tenant_organizations
                    REFERENCES tenant_organizations (id) ON DELETE CASCADE,
                kind varchar(10) NOT NULL CONSTRAINT ck_{table}_kind
                    CHECK (kind IN ('model', 'user', 'key', 'user_model')),
                start timestamptz NOT NULL,
                user_id uuid NOT NULL,
                token_id uuid NOT NULL,
                model varchar(100) NOT NULL,
                calls bigint NOT NULL,
                errors bigint NOT NULL,
                prompt_tokens bigint NOT NULL,
                completion_tokens bigint NOT NULL,
                cached_tokens bigint NOT NULL,
                cost bigint NOT NULL,
                overshoot bigint NOT NULL,
                latency_ms_sum bigint NOT NULL,
                CONSTRAINT pk_{table} PRIMARY KEY (tenant_id, kind, start, user_id, token_id, model)
            )
            """
        )
        op.execute(f"CREATE INDEX idx_{table}_tenant_user ON {table} (tenant_id, user_id, kind, start)")
    # The owner is under the log's forced RLS, and no tenant is set here: lifted for the copy only.
    op.execute("ALTER TABLE provider_usage_logs NO FORCE ROW LEVEL SECURITY")
    op.execute(_BACKFILL.format(table="provider_usage_hourly", unit="hour", sets="(model), (user_id), (token_id)"))
    op.execute(
        _BACKFILL.format(
            table="provider_usage_daily", unit="day", sets="(model), (user_id), (token_id), (user_id, model)"
        )
    )
    op.execute("ALTER TABLE provider_usage_logs FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE provider_usage_daily")
    op.execute("DROP TABLE provider_usage_hourly")
