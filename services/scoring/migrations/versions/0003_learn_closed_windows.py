"""Scoring learns a label once its window has closed: `closed_at` is when the partition's
clock passed the sample's horizon end (wall time), and the learner reads closed windows in
horizon-end order.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute("ALTER TABLE pending_samples ADD COLUMN closed_at timestamptz")
    op.execute("DROP INDEX IF EXISTS pending_open")
    op.execute("DROP INDEX IF EXISTS pending_resolved")
    # The sweep: windows a partition's clock may close (open ones resolve positive then).
    op.execute(
        "CREATE INDEX pending_unclosed ON pending_samples (partition, horizon_end) "
        "WHERE closed_at IS NULL"
    )
    # The learner: closed windows in horizon-end order.
    op.execute(
        "CREATE INDEX pending_closed ON pending_samples (horizon_end, id) "
        "WHERE closed_at IS NOT NULL"
    )
