"""Engagement service settings (TENURE_ENGAGEMENT_*)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class EngagementSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_ENGAGEMENT_", extra="ignore", populate_by_name=True
    )
    service_name: str = "engagement"
    playbooks_dir: Path = Path(__file__).parent / "playbooks"
    # A message is delivered only while its trigger is this fresh in wall-clock time.
    freshness_hours: float = Field(48.0, gt=0)
    global_holdout_share: float = Field(0.05, ge=0, le=0.5)
    marketing_per_week: int = Field(2, ge=0)
    marketing_per_month: int = Field(6, ge=0)
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    # Record decisions, deliver nothing.
    dry_run: bool = False
    # Delivery: the bank's messaging gateway (HMAC-signed webhook) and SMTP for e-mail.
    webhook_url: str | None = None
    webhook_secret: str = "tenure-dev-webhook-secret"
    smtp_host: str | None = None
    smtp_port: int = 25
    mail_from: str = "care@bank.example"
    profile_url: str = "http://127.0.0.1:8101"
    delivery_max_attempts: int = Field(5, ge=1)
    delivery_backoff_seconds: float = Field(1.0, gt=0)
    delivery_poll_seconds: float = Field(1.0, gt=0)
    uplift_window_days: int = Field(90, ge=1)
