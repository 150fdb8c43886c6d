"""Metrics of an experiment."""

import sqlalchemy as sa
from alembic import op

revision = "c2bbbbbbbbbb"
down_revision = "c1aaaaaaaaaa"


def upgrade():
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.experiment_id"), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
    )


def downgrade():
    op.drop_table("metrics")
