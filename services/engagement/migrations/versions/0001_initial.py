"""Engagement: the kit's tables, what the policy needs to know of a contact, decisions.

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
        CREATE TABLE contacts (
            customer_id text PRIMARY KEY,
            time_zone text NOT NULL DEFAULT 'UTC',
            rm_id text,
            flags jsonb NOT NULL DEFAULT '{}'::jsonb,
            value_tier text,
            tags jsonb NOT NULL DEFAULT '[]'::jsonb,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Consent per channel and purpose, latest event time wins (late events are facts).
    op.execute(
        """
        CREATE TABLE consents (
            customer_id text NOT NULL,
            channel text NOT NULL,
            purpose text NOT NULL,
            granted boolean NOT NULL,
            changed_at timestamptz NOT NULL,
            PRIMARY KEY (customer_id, channel, purpose)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE actions (
            action_id uuid PRIMARY KEY,
            customer_id text NOT NULL,
            playbook text NOT NULL,
            action text NOT NULL,
            channel text,
            decision text NOT NULL,
            reason text NOT NULL,
            policy jsonb NOT NULL,
            trigger_event_id uuid NOT NULL,
            decided_at timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX actions_customer ON actions (customer_id, decided_at DESC)")
