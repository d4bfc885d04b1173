-- Row-level security and grants for the auth_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.

ALTER TABLE public.auth_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.auth_users FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.auth_users;
CREATE POLICY tenant_isolation ON public.auth_users
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_users TO lyss_app;

ALTER TABLE public.auth_user_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.auth_user_sessions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.auth_user_sessions;
CREATE POLICY tenant_isolation ON public.auth_user_sessions
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_user_sessions TO lyss_app;

ALTER TABLE public.auth_oauth_providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.auth_oauth_providers FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.auth_oauth_providers;
CREATE POLICY tenant_isolation ON public.auth_oauth_providers
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_oauth_providers TO lyss_app;

ALTER TABLE public.auth_oauth_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.auth_oauth_connections FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.auth_oauth_connections;
CREATE POLICY tenant_isolation ON public.auth_oauth_connections
    USING (tenant_id = public.current_tenant()) WITH CHECK (tenant_id = public.current_tenant());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_oauth_connections TO lyss_app;
