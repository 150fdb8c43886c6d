"""add customers.external_ref (CRM id), unique

Revision ID: 9c3d5e7f1a28
Revises: 4b7e2a91c0d3
Create Date: 2024-04-17 15:03:27.553012

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "9c3d5e7f1a28"
down_revision: Union[str, Sequence[str], None] = "4b7e2a91c0d3"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Batch mode, as generated with render_as_batch=True (the project also ran its tests on SQLite).
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_ref", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_customers_external_ref", ["external_ref"])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint("uq_customers_external_ref", type_="unique")
        batch_op.drop_column("external_ref")
