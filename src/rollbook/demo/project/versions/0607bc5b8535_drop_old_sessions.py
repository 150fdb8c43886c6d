"""Drop table old_sessions.

Revision ID: 0607bc5b8535
Revises: 0607bc5b8534
"""

import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8535"
down_revision = "0607bc5b8534"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("old_sessions")


def downgrade() -> None:
    op.create_table(
        "old_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
    )
