"""The first migration changes a table it did not create: on an empty database it fails."""

import sqlalchemy as sa
from alembic import op

revision = "c1aaaaaaaaaa"
down_revision = None


def upgrade():
    op.add_column("experiments", sa.Column("lifecycle_stage", sa.String(32)))


def downgrade():
    op.drop_column("experiments", "lifecycle_stage")
