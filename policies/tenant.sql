-- Row-level security, grants and pre-tenant lookups for the tenant_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.

-- tenant_organizations: keyed by its own id, so a tenant sees only its own row. A new tenant is
-- inserted by a transaction that has already set app.tenant_id to the new id.
ALTER TABLE public.tenant_organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenant_organizations FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.tenant_organizations;
CREATE POLICY tenant_isolation ON public.tenant_organizations
    USING (id = public.current_tenant()) WITH CHECK (id = public.current_tenant());
-- The lookup role reads organizations only from inside tenant_lookup_by_slug().
DROP POLICY IF EXISTS lookup_by_slug ON public.tenant_organizations;
CREATE POLICY lookup_by_slug ON public.tenant_organizations FOR SELECT TO lyss_lookup USING (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_organizations TO lyss_app;
GRANT SELECT ON public.tenant_organizations TO lyss_lookup;

ALTER TABLE public.tenant_user_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenant_user_groups FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.tenant_user_groups;
CREATE POLICY tenant_isolation ON public.tenant_user_groups
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_user_groups TO lyss_app;

ALTER TABLE public.tenant_user_group_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenant_user_group_members FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.tenant_user_group_members;
CREATE POLICY tenant_isolation ON public.tenant_user_group_members
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenant_user_group_members TO lyss_app;

-- The audit log is append-only for the service: no UPDATE, no DELETE grant.
ALTER TABLE public.tenant_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenant_audit_events FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.tenant_audit_events;
CREATE POLICY tenant_isolation ON public.tenant_audit_events
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
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
