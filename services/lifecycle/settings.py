"""Lifecycle service settings (TENURE_LIFECYCLE_*)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LifecycleSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_LIFECYCLE_", extra="ignore", populate_by_name=True
    )
    service_name: str = "lifecycle"
    # The stage rules (validated at start and on POST /v1/rules:reload).
    rules_file: Path = Path(__file__).parent / "rules" / "lifecycle.yaml"
    # The sweeper wakes after every committed batch and at least this often.
    sweep_interval_seconds: float = Field(1.0, gt=0)
    # Customers advanced per sweep transaction.
    sweep_batch: int = Field(500, ge=1, le=10_000)
    # An input topic that delivered nothing for this long stops holding back its partition's
    # event clock (DESIGN.md "Time": an idle partition follows the others).
    idle_partition_seconds: float = Field(5.0, gt=0)
    # How far back (event time, behind the customer's position) a late fact still replays the
    # customer's history exactly; older facts are applied as of the start of this window.
    correction_window_days: float = Field(35.0, gt=0)
