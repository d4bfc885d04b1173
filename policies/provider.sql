-- Row-level security, grants and the token lookup for the provider_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.

-- The catalogue of provider kinds is platform-wide: readable by the service, changed only by migrations.
GRANT SELECT ON public.provider_types TO lyss_app;

CALL public.isolate_by_tenant('public.provider_channels');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.provider_channels TO lyss_app;

CALL public.isolate_by_tenant('public.provider_tokens');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.provider_tokens TO lyss_app;

CALL public.isolate_by_tenant('public.provider_model_prices');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.provider_model_prices TO lyss_app;

CALL public.isolate_by_tenant('public.provider_model_aliases');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.provider_model_aliases TO lyss_app;

CALL public.isolate_by_tenant('public.provider_model_routing');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.provider_model_routing TO lyss_app;

-- Stored Responses API answers: written by the gateway, read and deleted by the key that made them, pruned at expiry.
CALL public.isolate_by_tenant('public.provider_responses');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.provider_responses TO lyss_app;

-- Usage is appended by the flusher and read by reports; never rewritten.
CALL public.isolate_by_tenant('public.provider_usage_logs');
GRANT SELECT, INSERT ON public.provider_usage_logs TO lyss_app;
-- The operator's tenant overview (platform_tenant_overview in tenant.sql) sums each tenant's calls and cost.
DROP POLICY IF EXISTS lookup_usage_totals ON public.provider_usage_logs;
CREATE POLICY lookup_usage_totals ON public.provider_usage_logs FOR SELECT TO lyss_lookup USING (true);
REVOKE ALL ON public.provider_usage_logs FROM lyss_lookup;
GRANT SELECT (tenant_id, created_at, cost) ON public.provider_usage_logs TO lyss_lookup;

-- The usage rollups (migration 0029): kept by the flusher with the calls it writes (rows added or summed into),
-- read by the dashboard and the month totals.
CALL public.isolate_by_tenant('public.provider_usage_hourly');
GRANT SELECT, INSERT, UPDATE ON public.provider_usage_hourly TO lyss_app;
CALL public.isolate_by_tenant('public.provider_usage_daily');
GRANT SELECT, INSERT, UPDATE ON public.provider_usage_daily TO lyss_app;

-- The usage log is partitioned by month (migration 0030). The policy and the grants above are on the parent,
-- and every query goes through it: the partitions themselves have no grant, and RLS applies to them as rows
-- of the parent. The worker (the app role) makes next months' partitions ahead of time with this function,
-- which can only add empty partitions of fixed names and ranges; owned by the owner role, as DDL on the
-- table needs. Dropping old months is not the app role's to do: `lyss migrate` calls
-- drop_usage_log_partitions as the owner.
CREATE OR REPLACE FUNCTION public.usage_log_partitions_ahead(months_ahead integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    this_month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    month timestamptz;
    made integer := 0;
BEGIN
    FOR step IN 0 .. least(greatest(months_ahead, 0), 24) LOOP
        month := this_month + make_interval(months => step);
        IF to_regclass('public.provider_usage_logs_' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE public.%I PARTITION OF public.provider_usage_logs FOR VALUES FROM (%L) TO (%L)',
                'provider_usage_logs_' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM'), month,
                month + interval '1 month');
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END
$$;
REVOKE ALL ON FUNCTION public.usage_log_partitions_ahead(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.usage_log_partitions_ahead(integer) TO lyss_app;

-- The monthly partitions that ended more than `keep_months` whole months before this one, dropped: the
-- calls of this month and of the `keep_months` before it stay. Returns the dropped partitions' names.
CREATE OR REPLACE FUNCTION public.drop_usage_log_partitions(keep_months integer)
    RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    cutoff timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
        - make_interval(months => keep_months);
    partition_name text;
BEGIN
    IF keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, not %', keep_months;
    END IF;
    FOR partition_name IN
        SELECT child.relname FROM pg_inherits
        JOIN pg_class AS child ON child.oid = pg_inherits.inhrelid
        WHERE pg_inherits.inhparent = 'public.provider_usage_logs'::regclass
          AND child.relname ~ '^provider_usage_logs_[0-9]{6}$'
          AND to_date(right(child.relname, 6), 'YYYYMM')::timestamp AT TIME ZONE 'UTC' < cutoff
        ORDER BY child.relname
    LOOP
        EXECUTE format('DROP TABLE public.%I', partition_name);
        RETURN NEXT partition_name;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION public.drop_usage_log_partitions(integer) FROM PUBLIC;

-- The gateway knows a call's tenant only from its API key. The lookup role reads just the columns
-- this function returns.
DROP POLICY IF EXISTS lookup_token ON public.provider_tokens;
CREATE POLICY lookup_token ON public.provider_tokens FOR SELECT TO lyss_lookup USING (true);
REVOKE ALL ON public.provider_tokens FROM lyss_lookup;
GRANT SELECT (id, tenant_id, user_id, key_hash, status, expires_at, quota, rpm_limit, tpm_limit,
              max_concurrent, max_streams, allowed_models, allowed_channels, allowed_ips, response_cache)
    ON public.provider_tokens TO lyss_lookup;
DROP POLICY IF EXISTS lookup_token_owner ON public.auth_users;
CREATE POLICY lookup_token_owner ON public.auth_users FOR SELECT TO lyss_lookup USING (true);
REVOKE ALL ON public.auth_users FROM lyss_lookup;
GRANT SELECT (id, tenant_id, status) ON public.auth_users TO lyss_lookup;

CREATE OR REPLACE FUNCTION public.gateway_token_lookup(p_key_hash text)
    RETURNS TABLE (
        id uuid, tenant_id uuid, user_id uuid, status text, expires_at timestamptz, quota bigint,
        rpm_limit integer, tpm_limit integer, allowed_models jsonb, allowed_channels jsonb, allowed_ips jsonb,
        user_active boolean, tenant_active boolean, tenant_quota bigint, max_concurrent integer,
        max_streams integer, response_cache text
    )
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT t.id, t.tenant_id, t.user_id, t.status::text, t.expires_at, t.quota, t.rpm_limit, t.tpm_limit,
               t.allowed_models, t.allowed_channels, t.allowed_ips,
               u.status = 'active', o.status = 'active', o.quota, t.max_concurrent, t.max_streams,
               t.response_cache::text
        FROM public.provider_tokens AS t
        JOIN public.auth_users AS u ON u.tenant_id = t.tenant_id AND u.id = t.user_id
        JOIN public.tenant_organizations AS o ON o.id = t.tenant_id
        WHERE t.key_hash = p_key_hash
    $$;
ALTER FUNCTION public.gateway_token_lookup(text) OWNER TO lyss_lookup;
REVOKE ALL ON FUNCTION public.gateway_token_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.gateway_token_lookup(text) TO lyss_app;
