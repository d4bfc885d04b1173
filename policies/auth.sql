-- Row-level security and grants for the auth_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.

CALL public.isolate_by_tenant('public.auth_users');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_users TO lyss_app;

CALL public.isolate_by_tenant('public.auth_user_sessions');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_user_sessions TO lyss_app;

CALL public.isolate_by_tenant('public.auth_oauth_providers');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_oauth_providers TO lyss_app;

CALL public.isolate_by_tenant('public.auth_oauth_connections');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_oauth_connections TO lyss_app;

CALL public.isolate_by_tenant('public.auth_mfa_recovery_codes');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_mfa_recovery_codes TO lyss_app;

CALL public.isolate_by_tenant('public.auth_invitations');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_invitations TO lyss_app;

CALL public.isolate_by_tenant('public.auth_password_resets');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.auth_password_resets TO lyss_app;
