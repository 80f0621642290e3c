"""Ingress: the kit's tables, the partner registry and the shared-customer mapping.

Revision ID: 0001
"""

from alembic import op

from shared.db import kit_upgrade

revision = "0001"
down_revision = None


def upgrade() -> None:
    kit_upgrade(op)
    op.execute(
        """
        CREATE TABLE partners (
            partner_id text PRIMARY KEY,
            status text NOT NULL CHECK (status IN ('active', 'removed')),
            created_at timestamptz NOT NULL DEFAULT now(),
            rotated_at timestamptz,
            removed_at timestamptz
        )
        """
    )
    # Which of the bank's customers a partner may speak for, under the partner's own id.
    op.execute(
        """
        CREATE TABLE partner_customers (
            partner_id text NOT NULL REFERENCES partners (partner_id),
            partner_customer_id text NOT NULL,
            customer_id text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (partner_id, partner_customer_id)
        )
        """
    )
    op.execute("CREATE INDEX partner_customers_by_customer ON partner_customers (customer_id)")
