"""Scoring learns: per-customer schedule and memory, pending samples, labels, signed
checkpoints, model events (drift, proposals, promotions, rollbacks) and model commands.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE scores
            ADD COLUMN partition integer NOT NULL DEFAULT 0,
            ADD COLUMN next_due_at timestamptz,
            ADD COLUMN last_sample_at timestamptz,
            ADD COLUMN closed boolean NOT NULL DEFAULT false,
            ADD COLUMN memory jsonb NOT NULL DEFAULT '{}'::jsonb
        """
    )
    # A customer is known from their first event (raw activity may come before profile's
    # first snapshot): the score columns are empty until they are scored.
    for column in ("probability", "band", "model", "model_version", "cold_start", "reasons",
                   "features", "snapshot", "as_of", "event_id"):
        op.execute(f"ALTER TABLE scores ALTER COLUMN {column} DROP NOT NULL")
    # The sweep: who is due on a partition by event time.
    op.execute(
        "CREATE INDEX scores_due ON scores (partition, next_due_at) WHERE next_due_at IS NOT NULL"
    )
    # A prediction waiting for its label: the facts it was made from, until the label
    # resolves and the learner has learnt it (then it moves to `labels`).
    op.execute(
        """
        CREATE TABLE pending_samples (
            id bigserial PRIMARY KEY,
            customer_id text NOT NULL,
            partition integer NOT NULL,
            sampled_at timestamptz NOT NULL,
            horizon_end timestamptz NOT NULL,
            facts jsonb NOT NULL,
            weight double precision NOT NULL DEFAULT 1,
            prediction double precision NOT NULL,
            model_version integer NOT NULL,
            treated boolean NOT NULL DEFAULT false,
            label boolean,
            outcome text,
            resolved_at timestamptz,
            -- wall-clock time the outcome was last set: the learner lets it settle first
            recorded_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (customer_id, sampled_at)
        )
        """
    )
    op.execute(
        "CREATE INDEX pending_open ON pending_samples (partition, horizon_end) "
        "WHERE outcome IS NULL"
    )
    op.execute(
        "CREATE INDEX pending_resolved ON pending_samples (resolved_at, id) "
        "WHERE outcome IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE labels (
            id bigint PRIMARY KEY,
            customer_id text NOT NULL,
            sampled_at timestamptz NOT NULL,
            horizon_end timestamptz NOT NULL,
            label boolean,
            outcome text NOT NULL,
            resolved_at timestamptz,
            treated boolean NOT NULL,
            weight double precision NOT NULL,
            prediction double precision NOT NULL,
            model_version integer NOT NULL,
            champion_probability double precision,
            learnt_in integer,
            late_correction boolean NOT NULL DEFAULT false,
            recorded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX labels_customer ON labels (customer_id, sampled_at)")
    op.execute(
        """
        CREATE TABLE checkpoints (
            version integer PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            river_version text NOT NULL,
            reason text NOT NULL,
            champion text NOT NULL,
            challenger text NOT NULL,
            labels_learnt bigint NOT NULL,
            champion_blob bytea NOT NULL,
            champion_signature bytea NOT NULL,
            state_blob bytea NOT NULL,
            state_signature bytea NOT NULL,
            card jsonb NOT NULL,
            pinned boolean NOT NULL DEFAULT false
        )
        """
    )
    op.execute(
        """
        CREATE TABLE model_events (
            id bigserial PRIMARY KEY,
            kind text NOT NULL,
            version integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            details jsonb NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE model_commands (
            id bigserial PRIMARY KEY,
            kind text NOT NULL,
            target_version integer,
            requested_by text NOT NULL,
            requested_at timestamptz NOT NULL DEFAULT now(),
            status text NOT NULL DEFAULT 'pending',
            result jsonb,
            done_at timestamptz
        )
        """
    )
