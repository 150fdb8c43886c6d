"""derive customers.email_domain from email

Revision ID: e5f60718293a
Revises: c4d5e6f7a8b9
Create Date: 2024-06-11 08:55:46.002931

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "e5f60718293a"
down_revision: Union[str, Sequence[str], None] = "c4d5e6f7a8b9"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema and backfill the domain of every customer."""
    op.add_column("customers", sa.Column("email_domain", sa.String(length=255), nullable=True))
    op.create_index(op.f("ix_customers_email_domain"), "customers", ["email_domain"], unique=False)
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, email FROM customers")).fetchall()
    for row in rows:
        domain = row.email.rsplit("@", 1)[-1].lower()
        conn.execute(
            sa.text("UPDATE customers SET email_domain = :domain WHERE id = :id"),
            {"domain": domain, "id": row.id},
        )


def downgrade() -> None:
    """Write domains corrected by support back into the address, then drop the column."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT id, email, email_domain FROM customers "
            "WHERE email_domain IS NOT NULL AND split_part(email, '@', 2) <> email_domain"
        )
    ).fetchall()
    for row in rows:
        local_part = row.email.rsplit("@", 1)[0]
        conn.execute(
            sa.text("UPDATE customers SET email = :email WHERE id = :id"),
            {"email": f"{local_part}@{row.email_domain}", "id": row.id},
        )
    op.drop_index(op.f("ix_customers_email_domain"), table_name="customers")
    op.drop_column("customers", "email_domain")
