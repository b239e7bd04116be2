"""Alembic environment: runs migrations against the URL the caller configured."""

from __future__ import annotations

from alembic import context

from payoutdesk.kit.db import make_engine
from payoutdesk.models import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
