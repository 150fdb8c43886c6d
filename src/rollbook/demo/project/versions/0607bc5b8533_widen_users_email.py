"""Widen users.email from 100 to 255 characters.

Revision ID: 0607bc5b8533
Revises: 0607bc5b8532
"""

import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8533"
down_revision = "0607bc5b8532"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("users", "email", type_=sa.String(255), existing_type=sa.String(100))


def downgrade() -> None:
    op.alter_column("users", "email", type_=sa.String(100), existing_type=sa.String(255))
