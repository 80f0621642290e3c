"""Engagement: playbooks as data, delivery state, relationship-manager tasks, outcomes.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE contacts
            ADD COLUMN open_complaints integer NOT NULL DEFAULT 0,
            ADD COLUMN rfm_segment text,
            ADD COLUMN segment text,
            ADD COLUMN stage text
        """
    )
    op.execute(
        """
        ALTER TABLE actions
            ADD COLUMN purpose text NOT NULL DEFAULT 'marketing',
            ADD COLUMN template text,
            ADD COLUMN offer text,
            ADD COLUMN treated boolean NOT NULL DEFAULT false,
            ADD COLUMN deliver_at timestamptz,
            ADD COLUMN status text NOT NULL DEFAULT 'none',
            ADD COLUMN attempts integer NOT NULL DEFAULT 0,
            ADD COLUMN next_attempt_at timestamptz,
            ADD COLUMN last_error text,
            ADD COLUMN delivered_at timestamptz
        """
    )
    # The delivery worker's queue: due actions only, by time.
    op.execute(
        "CREATE INDEX actions_due ON actions (next_attempt_at) WHERE status = 'pending'"
    )
    op.execute("CREATE INDEX actions_playbook ON actions (playbook, decided_at)")
    op.execute(
        """
        CREATE TABLE playbooks (
            id text PRIMARY KEY,
            definition jsonb NOT NULL,
            source text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE rm_tasks (
            task_id uuid PRIMARY KEY,
            customer_id text NOT NULL,
            rm_id text,
            playbook text NOT NULL,
            template text NOT NULL,
            status text NOT NULL DEFAULT 'open',
            outcome text,
            created_at timestamptz NOT NULL DEFAULT now(),
            completed_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX rm_tasks_rm ON rm_tasks (rm_id, status, created_at)")
    op.execute(
        """
        CREATE TABLE outcomes (
            action_id uuid NOT NULL,
            outcome text NOT NULL,
            at timestamptz NOT NULL,
            detail text,
            PRIMARY KEY (action_id, outcome)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE churn_events (
            customer_id text NOT NULL,
            stage text NOT NULL,
            at timestamptz NOT NULL,
            PRIMARY KEY (customer_id, stage, at)
        )
        """
    )
