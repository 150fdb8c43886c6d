import os

from alembic import context
from sqlalchemy import create_engine, pool

# The dialect picks the folder of revisions, as Prefect's env.py does (its path comes from its ORM settings).
VERSIONS = os.path.join(os.path.dirname(__file__), "versions")
DIALECT = "postgresql"


def run_migrations_online() -> None:
    context.script.version_locations = [os.path.join(VERSIONS, DIALECT)]
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
