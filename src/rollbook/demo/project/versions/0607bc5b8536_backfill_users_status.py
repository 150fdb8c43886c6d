"""Data migration: every user without a status becomes 'active'.

Revision ID: 0607bc5b8536
Revises: 0607bc5b8535
"""

from alembic import op

revision = "0607bc5b8536"
down_revision = "0607bc5b8535"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE users SET status = 'active' WHERE status IS NULL")


def downgrade() -> None:
    # Cannot tell backfilled rows from rows that were 'active' before: all of them lose their status.
    op.execute("UPDATE users SET status = NULL WHERE status = 'active'")
