"""Chat: a user's conversations with the tenant's models, through the gateway, with memory in context."""
