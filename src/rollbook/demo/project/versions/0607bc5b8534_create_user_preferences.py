"""Create table user_preferences.

Revision ID: 0607bc5b8534
Revises: 0607bc5b8533
"""

import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8534"
down_revision = "0607bc5b8533"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_preferences",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("key", sa.String(50), nullable=False),
        sa.Column("value", sa.String(200)),
    )


def downgrade() -> None:
    op.drop_table("user_preferences")
