"""Profile: the kit's tables, customers and accounts.

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
        CREATE TABLE customers (
            customer_id text PRIMARY KEY,
            registered boolean NOT NULL DEFAULT false,
            segment text,
            time_zone text NOT NULL DEFAULT 'UTC',
            language text NOT NULL DEFAULT 'en',
            rm_id text,
            flags jsonb NOT NULL DEFAULT '{}'::jsonb,
            consent jsonb NOT NULL DEFAULT '{}'::jsonb,
            registered_at timestamptz,
            first_activity_at timestamptz,
            last_activity_at timestamptz,
            last_event_at timestamptz,
            transaction_count bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE accounts (
            customer_id text NOT NULL,
            account_id text NOT NULL,
            product_type text NOT NULL,
            currency text NOT NULL,
            balance numeric(24, 6) NOT NULL DEFAULT 0,
            balance_at timestamptz,
            margin_rate numeric(9, 6),
            opened_at timestamptz,
            closed_at timestamptz,
            close_reason text,
            PRIMARY KEY (customer_id, account_id)
        )
        """
    )
