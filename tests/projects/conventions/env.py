"""A real-project env.py: it reads its own settings and passes the models' MetaData as target_metadata."""

import os

from alembic import context
from sqlalchemy import create_engine, pool

from convention_models import metadata

target_metadata = metadata

url = os.environ.get("CONVENTIONS_DB_URL") or context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
