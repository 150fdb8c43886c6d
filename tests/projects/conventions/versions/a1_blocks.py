"""Block documents and references between them (the shape of Prefect's block_document_reference)."""

import sqlalchemy as sa
from alembic import op

revision = "a1b2c3d4e5f6"
down_revision = None


def upgrade():
    op.create_table(
        "block_document",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "block_document_reference",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("block_document.id"), nullable=False),
        sa.Column("child_id", sa.Integer, sa.ForeignKey("block_document.id"), nullable=False),
        sa.CheckConstraint("parent_id <> child_id", name="no_self_reference"),
    )


def downgrade():
    op.drop_table("block_document_reference")
    op.drop_table("block_document")
