"""Scoring service settings (TENURE_SCORING_*)."""

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# Signs model checkpoints in development; production sets TENURE_SCORING_CHECKPOINT_KEY.
DEV_CHECKPOINT_KEY = "tenure-dev-only-checkpoint-key-change-me-in-production"


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_SCORING_", extra="ignore", populate_by_name=True
    )
    service_name: str = "scoring"
    horizon_days: int = Field(90, ge=1)
    # Probability cut points for the bands low < medium < high < critical.
    band_cuts: tuple[float, float, float] = (0.25, 0.5, 0.75)
    # Until the champion has learnt this many resolved labels, the documented prior scores.
    min_labels_for_model: int = Field(200, ge=0)
    top_reasons: int = Field(3, ge=1, le=10)

    # Models (services/scoring/model.py KINDS).
    champion: str = "btyd-logit"
    challenger: str = "hoeffding-tree"
    # automatic: a better challenger is promoted on drift (dev); approve: it is proposed and
    # waits for POST /v1/model:promote.
    promotion: Literal["automatic", "approve"] = "automatic"
    metrics_window: int = Field(2000, ge=50)
    compare_window: int = Field(1000, ge=50)
    min_compare: int = Field(1000, ge=10)
    promotion_margin: float = Field(0.01, ge=0.0, lt=1.0)
    promotion_auc_margin: float = Field(0.01, ge=0.0, lt=1.0)
    adwin_delta: float = Field(0.002, gt=0.0, lt=1.0)
    # 0: a treated customer's label is recorded but not learnt (the playbook may have saved
    # them, so "stayed" would teach the model they were safe). >0: learnt with this weight.
    treated_weight: float = Field(0.0, ge=0.0, le=1.0)

    # Sampling for learning: one pending prediction per customer per period at most, taken at
    # time-driven points (never at the customer's own events, which would bias towards
    # moments of activity); weight = the time it stands for, in periods, capped.
    sample_period_days: float = Field(7.0, gt=0.0)
    max_sample_weight: float = Field(4.0, ge=1.0)
    # Silent customers are re-scored weekly, then less often as silence grows (a quarter of
    # it), at least every `rescore_max_days`.
    rescore_min_days: float = Field(7.0, gt=0.0)
    rescore_max_days: float = Field(28.0, gt=0.0)
    # A partition without events for this long follows the slowest active one (DESIGN: Time).
    idle_partition_seconds: float = Field(30.0, gt=0.0)
    # Between batches, the sweep runs this often when the clock has moved.
    sweep_interval_seconds: float = Field(1.0, gt=0.0)

    # Learner role (one instance, PostgreSQL advisory lock) and checkpoints.
    checkpoint_key: str = DEV_CHECKPOINT_KEY
    learn_interval_seconds: float = Field(1.0, gt=0.0)
    learn_batch: int = Field(5000, ge=1)
    checkpoint_poll_seconds: float = Field(1.0, gt=0.0)
    checkpoints_kept: int = Field(30, ge=2)
    # A resolved label is learnt once it has stood this long (wall clock): a replay's next
    # batch may still hold the activity that corrects a positive resolved by the clock.
    label_settle_seconds: float = Field(10.0, ge=0.0)
    run_learner: bool = True
    # The as-of report waits this long for the learner to include every window closed
    # before the request (a report reflects what the platform knows).
    report_settle_seconds: float = Field(90.0, ge=0.0)
