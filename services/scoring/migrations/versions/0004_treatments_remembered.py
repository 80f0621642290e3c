"""Scoring remembers a customer's treatments (engagement.decided, treated) after their last
sample, so a window whose point is taken after the decision arrived is marked treated too.

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute("ALTER TABLE scores ADD COLUMN treated_at timestamptz[] NOT NULL DEFAULT '{}'")
