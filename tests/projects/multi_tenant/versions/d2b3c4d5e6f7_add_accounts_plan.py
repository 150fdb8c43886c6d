"""add accounts.plan"""
import sqlalchemy as sa
from alembic import op

revision = "d2b3c4d5e6f7"
down_revision = "c1a2b3c4d5e6"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("accounts", sa.Column("plan", sa.Text))


def downgrade():
    op.drop_column("accounts", "plan")
