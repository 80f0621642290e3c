"""Engagement: find a customer's open RM tasks (they follow the customer's RM).

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX rm_tasks_open_by_customer ON rm_tasks (customer_id) WHERE status = 'open'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX rm_tasks_open_by_customer")
