"""create flows"""
import sqlalchemy as sa
from alembic import op

revision = "a1c2e3f4a5b6"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("flow", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text, nullable=False))


def downgrade():
    op.drop_table("flow")
