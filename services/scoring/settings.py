"""Scoring service settings (TENURE_SCORING_*)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ScoringSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TENURE_SCORING_", extra="ignore", populate_by_name=True
    )
    service_name: str = "scoring"
    horizon_days: int = Field(90, ge=1)
    # Probability cut points for the bands low < medium < high < critical.
    band_cuts: tuple[float, float, float] = (0.25, 0.5, 0.75)
    # Until the learner has seen this many resolved labels, the documented prior scores.
    min_labels_for_model: int = Field(200, ge=0)
    top_reasons: int = Field(3, ge=1, le=10)
