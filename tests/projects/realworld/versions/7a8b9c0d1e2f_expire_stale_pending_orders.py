"""expire pending orders older than 90 days

Revision ID: 7a8b9c0d1e2f
Revises: e5f60718293a
Create Date: 2024-07-23 17:21:58.640190

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "7a8b9c0d1e2f"
down_revision: Union[str, Sequence[str], None] = "e5f60718293a"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(
        sa.text(
            "UPDATE orders SET status = 'expired' "
            "WHERE status = 'pending' AND created_at < now() - interval '90 days'"
        )
    )


def downgrade() -> None:
    """Downgrade schema."""
    # Orders the app expired itself since cannot be told apart: they become pending again too.
    op.execute(sa.text("UPDATE orders SET status = 'pending' WHERE status = 'expired'"))
