"""Drop column users.old_preferences.

Revision ID: 0607bc5b8532
Revises: 0607bc5b8531
"""

import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8532"
down_revision = "0607bc5b8531"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("users", "old_preferences")


def downgrade() -> None:
    op.add_column("users", sa.Column("old_preferences", sa.String()))
