from alembic import context
from sqlalchemy import create_engine, pool, text

tenant = context.get_x_argument(as_dictionary=True)["tenant"]


def run_migrations_online() -> None:
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{tenant}"'))
        connection.execute(text(f'SET search_path TO "{tenant}"'))
        connection.commit()
        context.configure(connection=connection, version_table_schema=tenant, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
