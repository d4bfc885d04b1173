"""Alembic environment: runs on the owner-role connection handed over by db/migrations.py."""

from alembic import context
from alembic.script import ScriptDirectory

from db.models import Base
from db.policies import apply_policies

config = context.config
connection = config.attributes["connection"]

context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
    heads = set(ScriptDirectory.from_config(config).get_heads())
    if heads and set(context.get_context().get_current_heads()) == heads:
        apply_policies(connection)
