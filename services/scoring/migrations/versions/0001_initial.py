"""Scoring: the kit's tables and the latest score per customer with its history.

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
        CREATE TABLE scores (
            customer_id text PRIMARY KEY,
            probability double precision NOT NULL,
            band text NOT NULL,
            model text NOT NULL,
            model_version integer NOT NULL,
            cold_start boolean NOT NULL,
            reasons jsonb NOT NULL,
            features jsonb NOT NULL,
            snapshot jsonb NOT NULL,
            first_seen_at timestamptz NOT NULL,
            as_of timestamptz NOT NULL,
            event_id uuid NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE score_history (
            event_id uuid PRIMARY KEY,
            customer_id text NOT NULL,
            probability double precision NOT NULL,
            band text NOT NULL,
            model_version integer NOT NULL,
            as_of timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX score_history_customer ON score_history (customer_id, as_of DESC)")
