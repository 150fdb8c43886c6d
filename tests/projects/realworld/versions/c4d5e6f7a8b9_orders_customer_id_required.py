"""orders.customer_id is required

Revision ID: c4d5e6f7a8b9
Revises: 9c3d5e7f1a28
Create Date: 2024-05-02 11:40:09.870415

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "c4d5e6f7a8b9"
down_revision: Union[str, Sequence[str], None] = "9c3d5e7f1a28"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.alter_column("orders", "customer_id", existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.alter_column("orders", "customer_id", existing_type=sa.BigInteger(), nullable=True)
