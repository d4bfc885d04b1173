-- Row-level security and grants for the chat_ tables.
--
-- Applied after every `lyss migrate` (see db/policies.py); every statement here must be idempotent.
-- Within a tenant, a conversation belongs to one user: the services filter on user_id as well.

CALL public.isolate_by_tenant('public.chat_conversations');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_conversations TO lyss_app;

CALL public.isolate_by_tenant('public.chat_messages');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_messages TO lyss_app;

CALL public.isolate_by_tenant('public.chat_summaries');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_summaries TO lyss_app;

CALL public.isolate_by_tenant('public.chat_attachments');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.chat_attachments TO lyss_app;
