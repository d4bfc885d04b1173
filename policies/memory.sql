-- Row-level security and grants for the memory_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.
-- Within a tenant, a memory belongs to one user: the services filter on user_id as well.

CALL public.isolate_by_tenant('public.memory_user_memories');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.memory_user_memories TO lyss_app;

CALL public.isolate_by_tenant('public.memory_associations');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.memory_associations TO lyss_app;

-- The history is append-only for the service; it goes only with its memory (erasure).
CALL public.isolate_by_tenant('public.memory_history');
GRANT SELECT, INSERT ON public.memory_history TO lyss_app;
