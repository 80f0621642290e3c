"""Lifecycle: rules in event time. Facts log, walk checkpoints, the sweeper's next-due index,
corrections in the history.

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE customer_stages
            ALTER COLUMN stage DROP NOT NULL,
            ALTER COLUMN stage_entered_at DROP NOT NULL,
            ALTER COLUMN rule DROP NOT NULL,
            ADD COLUMN partition integer NOT NULL DEFAULT 0,
            ADD COLUMN position jsonb,
            ADD COLUMN base jsonb,
            ADD COLUMN log_start timestamptz,
            ADD COLUMN evaluated_at timestamptz,
            ADD COLUMN pending_from timestamptz,
            ADD COLUMN next_due_at timestamptz,
            ADD COLUMN history_seq integer NOT NULL DEFAULT 0
        """
    )
    # The sweeper's only way in: per partition, customers by the event time of their next
    # threshold, so a sweep reads the due ones and never the rest.
    op.execute(
        "CREATE INDEX customer_stages_due ON customer_stages (partition, next_due_at) "
        "WHERE next_due_at IS NOT NULL"
    )
    # Facts that wait for slower input topics, released when the partition's facts bound
    # passes them (the sweeper's second way in).
    op.execute(
        "CREATE INDEX customer_stages_waiting ON customer_stages (partition, pending_from) "
        "WHERE pending_from IS NOT NULL"
    )
    op.execute(
        """
        ALTER TABLE stage_history
            ADD COLUMN seq integer NOT NULL DEFAULT 0,
            ADD COLUMN kind text NOT NULL DEFAULT 'transition',
            ADD COLUMN lineage uuid,
            ADD COLUMN cause uuid,
            ADD COLUMN retracted_by uuid
        """
    )
    # Histories written before this revision: number them in event-time order.
    op.execute(
        """
        UPDATE stage_history h SET seq = n.seq, lineage = h.event_id
        FROM (SELECT event_id, row_number() OVER (PARTITION BY customer_id
                     ORDER BY transition_at, from_stage IS NOT NULL, recorded_at) AS seq
              FROM stage_history) n
        WHERE n.event_id = h.event_id
        """
    )
    op.execute(
        """
        UPDATE customer_stages c SET history_seq = n.count, log_start = c.stage_entered_at
        FROM (SELECT customer_id, count(*) AS count FROM stage_history GROUP BY customer_id) n
        WHERE n.customer_id = c.customer_id
        """
    )
    op.execute("DROP INDEX stage_history_customer")
    op.execute("CREATE INDEX stage_history_customer ON stage_history (customer_id, seq)")
    op.execute("CREATE INDEX stage_history_lineage ON stage_history (lineage)")
    op.execute(
        "CREATE INDEX stage_history_flow ON stage_history (transition_at) "
        "WHERE kind = 'transition' AND retracted_by IS NULL"
    )
    op.execute(
        """
        CREATE TABLE facts (
            customer_id text NOT NULL,
            occurred_at timestamptz NOT NULL,
            event_id uuid NOT NULL,
            kind text NOT NULL,
            data jsonb NOT NULL,
            PRIMARY KEY (customer_id, occurred_at, event_id)
        )
        """
    )
