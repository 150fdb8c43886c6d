"""An index-only revision, with a named check constraint its downgrade drops by its short name."""

import sqlalchemy as sa
from alembic import op

revision = "b2c3d4e5f6a7"
down_revision = "a1b2c3d4e5f6"


def upgrade():
    op.create_index(op.f("ix_block_document_reference__child_id"), "block_document_reference", ["child_id"])
    op.add_column("block_document", sa.Column("size", sa.Integer))
    op.create_check_constraint("positive_size", "block_document", "size > 0")


def downgrade():
    op.drop_constraint("positive_size", "block_document", type_="check")
    op.drop_column("block_document", "size")
    op.drop_index(op.f("ix_block_document_reference__child_id"), table_name="block_document_reference")
