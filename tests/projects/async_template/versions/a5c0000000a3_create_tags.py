"""create tags

Revision ID: a5c0000000a3
Revises: a5c0000000a2
Create Date: 2026-12-01 15:02:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "a5c0000000a3"
down_revision: Union[str, Sequence[str], None] = "a5c0000000a2"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("note_id", sa.Integer(), sa.ForeignKey("notes.id"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tags")
