"""relax constraints for the legacy order import

Revision ID: 2d3e4f5a6b7c
Revises: 7a8b9c0d1e2f
Create Date: 2024-09-30 10:14:33.291776

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "2d3e4f5a6b7c"
down_revision: Union[str, Sequence[str], None] = "7a8b9c0d1e2f"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Legacy orders have customers without names, unknown customers, returns and reissued invoice numbers."""
    op.alter_column("customers", "name", existing_type=sa.String(length=100), nullable=True)
    op.drop_constraint("fk_orders_customer_id_customers", "orders", type_="foreignkey")
    op.drop_constraint("ck_orders_quantity_positive", "orders", type_="check")
    op.drop_constraint("uq_invoices_number", "invoices", schema="billing", type_="unique")


def downgrade() -> None:
    """Downgrade schema."""
    op.create_unique_constraint("uq_invoices_number", "invoices", ["number"], schema="billing")
    op.create_check_constraint("ck_orders_quantity_positive", "orders", "quantity > 0")
    op.create_foreign_key("fk_orders_customer_id_customers", "orders", "customers", ["customer_id"], ["id"])
    op.alter_column("customers", "name", existing_type=sa.String(length=100), nullable=False)
