"""Lifecycle: the kit's tables, each customer's stage and its history.

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
        CREATE TABLE customer_stages (
            customer_id text PRIMARY KEY,
            stage text NOT NULL,
            stage_entered_at timestamptz NOT NULL,
            rule text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE stage_history (
            event_id uuid PRIMARY KEY,
            customer_id text NOT NULL,
            from_stage text,
            to_stage text NOT NULL,
            rule text NOT NULL,
            evidence jsonb NOT NULL,
            transition_at timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX stage_history_customer ON stage_history (customer_id, transition_at)"
    )
