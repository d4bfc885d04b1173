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
