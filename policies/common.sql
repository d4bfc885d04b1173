-- Shared by every policy: the tenant of the current transaction.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.
--
-- LANGUAGE sql STABLE so that the planner inlines it and `tenant_id = current_tenant()` keeps using
-- the tenant_id indexes. NULLIF: current_setting() is NULL on a fresh connection but '' once the
-- setting was used on it; both mean "no tenant", which matches no row.
CREATE OR REPLACE FUNCTION public.current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

REVOKE ALL ON FUNCTION public.current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.current_tenant() TO lyss_app, lyss_lookup;

-- The standard isolation of a tenant-owned table: RLS enabled and FORCEd (so the owner is filtered
-- too) and the tenant_isolation policy on `key_column`, for every command, reads and writes alike.
-- Used by the prefix files at migration time; the app role cannot call it.
CREATE OR REPLACE PROCEDURE public.isolate_by_tenant(target regclass, key_column name DEFAULT 'tenant_id')
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (%I = public.current_tenant()) '
        'WITH CHECK (%I = public.current_tenant())',
        target, key_column, key_column
    );
END
$$;

REVOKE ALL ON PROCEDURE public.isolate_by_tenant(regclass, name) FROM PUBLIC;
