-- Row-level security, grants and pre-tenant lookups for the tenant_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.

-- tenant_organizations: keyed by its own id, so a tenant sees only its own row. A new tenant is
-- inserted by a transaction whose app.tenant_id already holds the new id.
CALL public.isolate_by_tenant('public.tenant_organizations', 'id');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_organizations TO lyss_app;
-- The lookup role reads organizations only from inside the SECURITY DEFINER functions below.
DROP POLICY IF EXISTS lookup_by_slug ON public.tenant_organizations;
CREATE POLICY lookup_by_slug ON public.tenant_organizations FOR SELECT TO lyss_lookup USING (true);
REVOKE ALL ON public.tenant_organizations FROM lyss_lookup;
GRANT SELECT (id, slug, name, status, subscription_plan, quota, currency, created_at)
    ON public.tenant_organizations TO lyss_lookup;

CALL public.isolate_by_tenant('public.tenant_user_groups');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_user_groups TO lyss_app;

CALL public.isolate_by_tenant('public.tenant_user_group_members');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_user_group_members TO lyss_app;

CALL public.isolate_by_tenant('public.tenant_budgets');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_budgets TO lyss_app;

-- The audit log is append-only for the service: no UPDATE, no DELETE grant.
CALL public.isolate_by_tenant('public.tenant_audit_events');
GRANT SELECT, INSERT ON public.tenant_audit_events TO lyss_app;

-- Login starts from a tenant slug, before any tenant is set: return the id and status, nothing else.
CREATE OR REPLACE FUNCTION public.tenant_lookup_by_slug(p_slug text)
    RETURNS TABLE (id uuid, status text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT o.id, o.status::text FROM public.tenant_organizations AS o WHERE o.slug = p_slug
    $$;
ALTER FUNCTION public.tenant_lookup_by_slug(text) OWNER TO lyss_lookup;
REVOKE ALL ON FUNCTION public.tenant_lookup_by_slug(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.tenant_lookup_by_slug(text) TO lyss_app;

-- Platform maintenance (`lyss keys rotate`, scheduled jobs) visits every tenant in turn: ids only.
CREATE OR REPLACE FUNCTION public.platform_tenant_ids()
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT o.id FROM public.tenant_organizations AS o ORDER BY o.id
    $$;
ALTER FUNCTION public.platform_tenant_ids() OWNER TO lyss_lookup;
REVOKE ALL ON FUNCTION public.platform_tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.platform_tenant_ids() TO lyss_app;

CALL public.isolate_by_tenant('public.tenant_jobs');
GRANT SELECT, INSERT, UPDATE ON public.tenant_jobs TO lyss_app;

-- A job's history is append-only for the service.
CALL public.isolate_by_tenant('public.tenant_job_events');
GRANT SELECT, INSERT ON public.tenant_job_events TO lyss_app;

CALL public.isolate_by_tenant('public.tenant_webhook_endpoints');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_webhook_endpoints TO lyss_app;

-- The delivery log is append-only for the service (its rows go with their endpoint: ON DELETE CASCADE).
CALL public.isolate_by_tenant('public.tenant_webhook_deliveries');
GRANT SELECT, INSERT ON public.tenant_webhook_deliveries TO lyss_app;

-- /metrics counts jobs across tenants: per kind and status, how many are stuck (running past their
-- timeout) and how long recent ones took. Aggregates only, no row.
DROP POLICY IF EXISTS lookup_job_stats ON public.tenant_jobs;
CREATE POLICY lookup_job_stats ON public.tenant_jobs FOR SELECT TO lyss_lookup USING (true);
REVOKE ALL ON public.tenant_jobs FROM lyss_lookup;
GRANT SELECT (kind, status, started_at, finished_at, timeout_seconds, updated_at)
    ON public.tenant_jobs TO lyss_lookup;

CREATE OR REPLACE FUNCTION public.platform_job_stats()
    RETURNS TABLE (kind text, status text, jobs bigint, stuck bigint, p50_seconds double precision,
                   p95_seconds double precision)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT j.kind::text, j.status::text, count(*),
               count(*) FILTER (WHERE j.status = 'running'
                                AND j.started_at < now() - make_interval(secs => j.timeout_seconds)),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.started_at))
                   FILTER (WHERE j.finished_at > now() - interval '1 hour'),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.started_at))
                   FILTER (WHERE j.finished_at > now() - interval '1 hour')
        FROM public.tenant_jobs AS j
        GROUP BY j.kind, j.status
    $$;
ALTER FUNCTION public.platform_job_stats() OWNER TO lyss_lookup;
REVOKE ALL ON FUNCTION public.platform_job_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.platform_job_stats() TO lyss_app;

-- The catalogue of plans is platform-wide: readable by the service, changed only by migrations.
GRANT SELECT ON public.platform_plans TO lyss_app;
GRANT SELECT ON public.platform_plans TO lyss_lookup;

-- The platform operator's view of the tenants: each organization's name, slug, status and plan, with counts
-- and sums (active users, this month's gateway calls and their cost). Aggregates only: no row of any other
-- table leaves this function. Usage is read through the `lookup_usage_totals` policy of policies/provider.sql.
CREATE OR REPLACE FUNCTION public.platform_tenant_overview()
    RETURNS TABLE (id uuid, slug text, name text, status text, subscription_plan text, max_users integer,
                   quota bigint, currency text, created_at timestamptz, users bigint, requests_this_month bigint,
                   cost_this_month bigint)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT o.id, o.slug::text, o.name::text, o.status::text, o.subscription_plan::text, plan.max_users, o.quota,
               o.currency::text,
               o.created_at,
               (SELECT count(*) FROM public.auth_users AS u WHERE u.tenant_id = o.id AND u.status = 'active'),
               usage.requests, usage.cost
        FROM public.tenant_organizations AS o
        JOIN public.platform_plans AS plan ON plan.name = o.subscription_plan
        CROSS JOIN LATERAL (
            SELECT count(*) AS requests, coalesce(sum(l.cost), 0)::bigint AS cost
            FROM public.provider_usage_logs AS l
            WHERE l.tenant_id = o.id
              AND l.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        ) AS usage
        ORDER BY o.slug
    $$;
ALTER FUNCTION public.platform_tenant_overview() OWNER TO lyss_lookup;
REVOKE ALL ON FUNCTION public.platform_tenant_overview() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.platform_tenant_overview() TO lyss_app;
