"""The usage log partitioned by month: provider_usage_logs PARTITION BY RANGE (created_at), key (tenant_id, created_at, id).

A month's calls are one table, so that reading a window touches only its months and retention drops whole
months (`lyss migrate`, LYSS_USAGE_RETENTION_MONTHS) instead of deleting rows. The rows are copied over.

Revision ID: 0028
Revises: 0027
Create Date: 2026-11-30 16:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE provider_usage_logs RENAME TO provider_usage_logs_unpartitioned")
    # The owner is under the log's forced RLS too, and no tenant is set here: without this the copy below would
    # see no row at all.
    op.execute("ALTER TABLE provider_usage_logs_unpartitioned NO FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE TABLE provider_usage_logs (LIKE provider_usage_logs_unpartitioned INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)"
    )
    # One partition per month from the oldest row's to three past this one; the default one catches a
    # row outside them (a clock far off, or the worker's partition task not run for months) instead of failing it.
    op.execute(
        """
        DO $$
        DECLARE
            this_month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
            first_month timestamptz;
            month timestamptz;
        BEGIN
            SELECT least(this_month, min(date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))
            INTO first_month FROM provider_usage_logs_unpartitioned;
            FOR month IN SELECT generate_series(first_month, this_month + interval '3 months', interval '1 month')
            LOOP
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF provider_usage_logs FOR VALUES FROM (%L) TO (%L)',
                    'provider_usage_logs_' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM'),
                    month, month + interval '1 month');
            END LOOP;
        END $$
        """
    )
    op.execute("CREATE TABLE provider_usage_logs_default PARTITION OF provider_usage_logs DEFAULT")
    op.execute("INSERT INTO provider_usage_logs SELECT * FROM provider_usage_logs_unpartitioned")
    op.execute("DROP TABLE provider_usage_logs_unpartitioned")
    # Built after the copy, on the parent (each partition gets its own). The partition key is in the primary
    # key, as PostgreSQL requires of a partitioned table's unique keys; the tenant leads it.
    op.execute(
        "ALTER TABLE provider_usage_logs ADD CONSTRAINT pk_provider_usage_logs PRIMARY KEY (tenant_id, created_at, id)"
    )
    op.execute(
        "ALTER TABLE provider_usage_logs ADD CONSTRAINT fk_provider_usage_logs_tenant_id_tenant_organizations "
        "FOREIGN KEY (tenant_id) REFERENCES tenant_organizations (id) ON DELETE CASCADE"
    )
    op.execute(
        "CREATE INDEX idx_usage_logs_tenant_token_created ON provider_usage_logs (tenant_id, token_id, created_at DESC)"
    )
    op.execute(
        "CREATE INDEX idx_usage_logs_tenant_user_created ON provider_usage_logs (tenant_id, user_id, created_at)"
    )
    op.execute("CREATE INDEX idx_usage_logs_tenant_id ON provider_usage_logs (tenant_id, id)")


def downgrade() -> None:
    op.execute("ALTER TABLE provider_usage_logs RENAME TO provider_usage_logs_partitioned")
    op.execute("ALTER TABLE provider_usage_logs_partitioned NO FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE TABLE provider_usage_logs (LIKE provider_usage_logs_partitioned INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS)"
    )
    op.execute("INSERT INTO provider_usage_logs SELECT * FROM provider_usage_logs_partitioned")
    op.execute("DROP TABLE provider_usage_logs_partitioned")
    op.execute("ALTER TABLE provider_usage_logs ADD CONSTRAINT pk_provider_usage_logs PRIMARY KEY (id)")
    op.execute(
        "ALTER TABLE provider_usage_logs ADD CONSTRAINT fk_provider_usage_logs_tenant_id_tenant_organizations "
        "FOREIGN KEY (tenant_id) REFERENCES tenant_organizations (id) ON DELETE CASCADE"
    )
    op.execute("CREATE INDEX idx_usage_logs_tenant_created ON provider_usage_logs (tenant_id, created_at DESC)")
    op.execute(
        "CREATE INDEX idx_usage_logs_tenant_token_created ON provider_usage_logs (tenant_id, token_id, created_at DESC)"
    )
