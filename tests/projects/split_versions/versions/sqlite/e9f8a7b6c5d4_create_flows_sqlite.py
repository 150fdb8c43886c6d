"""create flows (SQLite)"""
import sqlalchemy as sa
from alembic import op

revision = "e9f8a7b6c5d4"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("flow", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text, nullable=False))


def downgrade():
    op.drop_table("flow")
