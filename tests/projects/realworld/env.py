"""Alembic environment that ignores sqlalchemy.url, takes the URL from the app's settings, and keeps its
revision in a version table of its own name."""

from alembic import context
from sqlalchemy import create_engine, pool

import app_settings

target_metadata = None
VERSION_TABLE = "schema_history"


def run_migrations_offline() -> None:
    context.configure(url=app_settings.database_url(), literal_binds=True, transaction_per_migration=True,
                      version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(app_settings.database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=True,
                          version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
