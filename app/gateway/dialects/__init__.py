"""The client dialects /v1 speaks: what Lyss reads of an OpenAI or an Anthropic request, typed."""
