"""Add column users.preferences.

Revision ID: 0607bc5b8531
Revises: 0607bc5b8530
"""

import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8531"
down_revision = "0607bc5b8530"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("preferences", sa.JSON()))


def downgrade() -> None:
    op.drop_column("users", "preferences")
