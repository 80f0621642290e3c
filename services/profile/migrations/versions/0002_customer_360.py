"""Profile: the 360° view (personal data encrypted, blind index, daily activity, feedback,
timeline, population histograms, churn score and stage, audit).

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE customers
            ADD COLUMN last_nps smallint,
            ADD COLUMN last_nps_at timestamptz,
            ADD COLUMN churn_probability double precision,
            ADD COLUMN churn_band text,
            ADD COLUMN churn_reasons jsonb,
            ADD COLUMN churn_as_of timestamptz,
            ADD COLUMN stage text,
            ADD COLUMN stage_since timestamptz,
            ADD COLUMN tags jsonb NOT NULL DEFAULT '[]'::jsonb,
            ADD COLUMN buckets jsonb NOT NULL DEFAULT '{}'::jsonb,
            ADD COLUMN rfm_segment text,
            ADD COLUMN value_tier text,
            ADD COLUMN quadrant text,
            ADD COLUMN clv double precision
        """
    )
    op.execute("CREATE INDEX customers_segment ON customers (rfm_segment, customer_id)")
    op.execute("CREATE INDEX customers_tier ON customers (value_tier, customer_id)")
    op.execute("CREATE INDEX customers_stage ON customers (stage, customer_id)")
    op.execute("CREATE INDEX customers_churn ON customers (churn_probability)")
    op.execute("CREATE INDEX customers_tags ON customers USING gin (tags)")
    # Personal data: AES-GCM tokens bound to field and customer, key id kept for rotation.
    op.execute(
        """
        CREATE TABLE customer_pii (
            customer_id text NOT NULL,
            field text NOT NULL,
            token bytea NOT NULL,
            key_id text NOT NULL,
            PRIMARY KEY (customer_id, field)
        )
        """
    )
    op.execute("CREATE INDEX customer_pii_key ON customer_pii (key_id)")
    # Keyed blind index (HMAC of the normalised value) for search without decryption.
    op.execute(
        """
        CREATE TABLE blind_index (
            kind text NOT NULL,
            digest bytea NOT NULL,
            customer_id text NOT NULL,
            PRIMARY KEY (kind, digest, customer_id)
        )
        """
    )
    op.execute("CREATE INDEX blind_index_customer ON blind_index (customer_id)")
    op.execute(
        """
        CREATE TABLE activity_days (
            customer_id text NOT NULL,
            day date NOT NULL,
            transactions integer NOT NULL DEFAULT 0,
            amount numeric(24, 6) NOT NULL DEFAULT 0,
            card_spend numeric(24, 6) NOT NULL DEFAULT 0,
            salary_credits integer NOT NULL DEFAULT 0,
            sessions integer NOT NULL DEFAULT 0,
            app_events integer NOT NULL DEFAULT 0,
            feedback integer NOT NULL DEFAULT 0,
            ch_branch integer NOT NULL DEFAULT 0,
            ch_atm integer NOT NULL DEFAULT 0,
            ch_mobile integer NOT NULL DEFAULT 0,
            ch_web integer NOT NULL DEFAULT 0,
            ch_call_centre integer NOT NULL DEFAULT 0,
            ch_pos integer NOT NULL DEFAULT 0,
            PRIMARY KEY (customer_id, day)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE complaints (
            customer_id text NOT NULL,
            complaint_id text NOT NULL,
            category text,
            severity text,
            opened_at timestamptz,
            resolved_at timestamptz,
            PRIMARY KEY (customer_id, complaint_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE timeline (
            customer_id text NOT NULL,
            event_id uuid NOT NULL,
            occurred_at timestamptz NOT NULL,
            event_type text NOT NULL,
            summary jsonb NOT NULL,
            PRIMARY KEY (customer_id, event_id)
        )
        """
    )
    op.execute("CREATE INDEX timeline_recent ON timeline (customer_id, occurred_at DESC)")
    op.execute(
        """
        CREATE TABLE population (
            measure text NOT NULL,
            bucket integer NOT NULL,
            customers bigint NOT NULL,
            PRIMARY KEY (measure, bucket)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE audit_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            subject text NOT NULL,
            kind text NOT NULL,
            action text NOT NULL,
            customer_id text,
            purpose text,
            detail jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX audit_customer ON audit_log (customer_id, at)")
