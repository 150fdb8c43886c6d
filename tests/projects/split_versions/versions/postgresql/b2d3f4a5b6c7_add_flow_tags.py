"""add flow tags"""
import sqlalchemy as sa
from alembic import op

revision = "b2d3f4a5b6c7"
down_revision = "a1c2e3f4a5b6"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("flow", sa.Column("tags", sa.Text))


def downgrade():
    op.drop_column("flow", "tags")
