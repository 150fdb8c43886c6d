"""The application's first tables, made by metadata.create_all before any migration runs (as MLflow does)."""

import sqlalchemy as sa

metadata = sa.MetaData()

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("experiment_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
)


def create_tables(connection):
    """What the application runs on a new database, before it stamps or upgrades its migrations."""
    metadata.create_all(connection)
