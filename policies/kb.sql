-- Row-level security and grants for the kb_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.
-- Within a tenant, who may read or change a base (its owner, its group, everyone) is the service's check.

CALL public.isolate_by_tenant('public.kb_bases');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.kb_bases TO lyss_app;

CALL public.isolate_by_tenant('public.kb_documents');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.kb_documents TO lyss_app;

CALL public.isolate_by_tenant('public.kb_chunks');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.kb_chunks TO lyss_app;
