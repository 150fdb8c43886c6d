"""widen billing.invoices.amount and orders.quantity

Revision ID: 8e9f0a1b2c3d
Revises: 2d3e4f5a6b7c
Create Date: 2024-11-08 14:47:05.733158

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "8e9f0a1b2c3d"
down_revision: Union[str, Sequence[str], None] = "2d3e4f5a6b7c"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("invoices", schema="billing") as batch_op:
        batch_op.alter_column(
            "amount",
            existing_type=sa.Numeric(precision=10, scale=2),
            type_=sa.Numeric(precision=14, scale=2),
            existing_nullable=False,
        )
    op.alter_column("orders", "quantity", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.alter_column("orders", "quantity", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table("invoices", schema="billing") as batch_op:
        batch_op.alter_column(
            "amount",
            existing_type=sa.Numeric(precision=14, scale=2),
            type_=sa.Numeric(precision=10, scale=2),
            existing_nullable=False,
        )
