"""env.py of a project whose base tables come from create_all: it migrates whatever URL its settings name."""

import os

from alembic import context
from sqlalchemy import create_engine, pool

url = os.environ.get("CREATEALL_DB_URL") or context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
