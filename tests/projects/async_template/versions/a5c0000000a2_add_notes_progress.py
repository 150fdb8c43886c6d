"""add notes.progress, filled for finished notes

Revision ID: a5c0000000a2
Revises: a5c0000000a1
Create Date: 2026-12-01 15:01:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "a5c0000000a2"
down_revision: Union[str, Sequence[str], None] = "a5c0000000a1"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("notes", sa.Column("progress", sa.Text(), nullable=True))
    # Written for asyncpg, whose SQL has no '%' placeholders: every '%' is literal, '%I' included.
    op.get_bind().exec_driver_sql("UPDATE notes SET progress = '100%' WHERE body LIKE 'done:%'")
    op.get_bind().exec_driver_sql(
        "DO $$ BEGIN EXECUTE format('COMMENT ON COLUMN %I.%I IS %L', 'notes', 'progress', 'how far, as 100%'); END $$"
    )


def downgrade() -> None:
    op.drop_column("notes", "progress")
